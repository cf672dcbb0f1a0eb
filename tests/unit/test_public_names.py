"""Every name that ``mechit`` lists in ``__all__`` resolves (its lazy ``__getattr__``)."""

import importlib

import pytest

import mechit


@pytest.mark.parametrize("name", mechit.__all__)
def test_every_public_name_resolves(name):
    value = getattr(mechit, name)
    module = importlib.import_module(mechit._EXPORTS[name])
    assert value is getattr(module, name)


def test_new_verbs_are_exported():
    assert {"compare", "ModelPair", "tag_model", "attribute_dataset", "write_report", "headline"} <= set(mechit.__all__)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        mechit.nothing
