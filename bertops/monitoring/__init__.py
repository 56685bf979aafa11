"""Drift monitoring of the production model: the reference profile a version is packaged with
(`reference`), the live window the endpoint keeps (`window`, pure numpy: the Bento carries it), the
comparison (`drift`) and the `bertops monitor` stage that runs it and decides on a retrain (`monitor`)."""
