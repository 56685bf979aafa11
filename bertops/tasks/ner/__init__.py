"""Token classification (NER, CoNLL-2003 IOB2 tags): tokens -> tags; served as entities with
character offsets. The stage hooks are this folder's modules named as the stages."""

from bertops.tasks.base import ModuleTask

TASK = ModuleTask("ner", __name__, service="service:TokenTagging", route="/tag")
