"""Token classification (NER): CoNLL tokens -> IOB2 tags; served as entities with character offsets."""

from bertops.tasks.ner.stages import TokenClassificationTask

TASK = TokenClassificationTask()
