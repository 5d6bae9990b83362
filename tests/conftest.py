import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts with the default dtype policy, a fixed seed and no leftover graph state."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")
    # free_memory=False: Keras would also run a full gc.collect() after every test, which costs 0.5-3 s a test
    # once TensorFlow's traced graphs fill the heap (measured with py-spy); Python's own collector frees them.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(scope="session")
def raccoon():
    """Path of the raccoon dataset. Missing data fails in CI (CI=true) and skips elsewhere."""
    from tests.testing import find_raccoon

    path = find_raccoon()
    if path is None:
        message = "the raccoon dataset is not at ../shared/datasets/raccoon; set KERAS_FPN_RACCOON to its folder"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def pytest_collection_modifyitems(config, items):
    """Slow tests first, in their usual order: `pytest -n 2` (scripts/test.sh) then starts the long end-to-end runs
    early and fills the other worker with the short tests, instead of ending on one long test with a worker idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

