"""Every dataset adapter is registered and describes itself for `pipeline datasets`."""
import pytest

from pipeline.adapters import ADAPTERS
from pipeline.adapters.base import CANONICAL

DATASETS = ("mmi", "bu4dfe", "afew", "dfew", "ckplus", "oulu", "ferv39k", "mafw")


@pytest.mark.parametrize("name", DATASETS)
def test_registered_and_described(name):
    adapter = ADAPTERS[name]
    assert adapter.name == name
    assert adapter.description and adapter.protocol and "\n" in adapter.layout
    assert adapter.default_classes and set(adapter.default_classes) <= set(CANONICAL)
