"""The endpoint's code: service.py (the BentoML services), engine.py (the serving engine) and
bentofile.yaml. Installed with bertops as the package `bertops_serving` so that a machine with
`pip install bertops` (no checkout) can package and serve; bertops reads these files and copies
them into a Bento or a serving folder (bertops.packaging.lay_out_service), it never imports them."""
