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


def test_default_classes_come_from_the_one_table():
    """extract reads `DEFAULT_CLASSES` without importing the adapters: every adapter (aliases too) agrees with it."""
    from pipeline.labels import DEFAULT_CLASSES

    assert {n: a.default_classes for n, a in ADAPTERS.items() if a.default_classes} == DEFAULT_CLASSES
