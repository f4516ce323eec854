"""With a real TensorFlow: tensors in give tensors out, graph mode (tf.function) works, and the
installer swaps ptychostitch into a PtychoPINN-like package and back."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ptychostitch as ps

tf = pytest.importorskip("tensorflow", reason="TensorFlow is not installed (scripts/test.sh installs tensorflow-cpu)")

FUNCTIONS = ["shift_and_sum", "reassemble_position", "shift_and_sum_old", "reassemble_position_old"]


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_tensors_in_give_tensors_out_with_the_golden_bits(golden):
    obj, off, M = golden["obj"], golden["offsets"], int(golden["M"])
    for name in FUNCTIONS:
        expected = golden[name if name.endswith("_old") else f"{name}_old"]
        fn = getattr(ps, name)
        out = fn(tf.constant(obj), tf.constant(off), M)
        assert isinstance(out, tf.Tensor), name
        assert same_bits(out.numpy(), expected), f"{golden['name']}: {name}"
        assert isinstance(fn(obj, off, M), np.ndarray), "NumPy in, NumPy out"
        assert isinstance(fn(tf.Variable(obj), off, M), tf.Tensor), "variables too"


def test_plan_returns_tensors_for_tensors(golden):
    obj, off, M = golden["obj"], golden["offsets"], int(golden["M"])
    plan = ps.Plan(tf.constant(off), obj.shape[1], M)
    out = plan.reassemble_position(tf.constant(obj))
    assert isinstance(out, tf.Tensor)
    assert same_bits(out.numpy(), golden["reassemble_position_old"])


def test_inside_tf_function_the_bits_are_the_same(golden):
    obj, off, M = golden["obj"], golden["offsets"], int(golden["M"])

    @tf.function
    def stitched(o, f):
        assert tf.is_symbolic_tensor(o), "traced, not eager"
        image = ps.reassemble_position(o, f, M=M)
        # Known dtype and rank while tracing: downstream TF code can build on it.
        assert image.dtype == tf.complex64 and image.shape.rank == 3
        return tf.abs(image), image

    amplitude, image = stitched(tf.constant(obj), tf.constant(off))
    assert same_bits(image.numpy(), golden["reassemble_position_old"])
    assert amplitude.shape == image.shape

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    def real(o):
        return ps.shift_and_sum(o, off, M=M)

    out = real(tf.constant(obj.real.copy()))
    assert out.dtype == tf.float32
    assert same_bits(out.numpy(), ps.shift_and_sum_old(obj.real.copy(), off, M))


def test_tensorflow_is_never_imported_for_numpy_input():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import ptychostitch as ps
        ps.reassemble_position(np.ones((3, 16, 16, 1), np.complex64), np.arange(6.0).reshape(3, 1, 1, 2), M=8)
        import ptychostitch.ptychopinn
        print("tensorflow" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


STAND_IN = {
    "ptycho/__init__.py": "",
    # PtychoPINN's tf_helper: TensorFlow functions that return tf.Tensor; the batched
    # shift_and_sum is a tf.function. These stand-ins must never be called once installed.
    "ptycho/tf_helper.py": """
        import tensorflow as tf

        def _original(name):
            raise RuntimeError(f"original {name} called")

        @tf.function
        def shift_and_sum(obj_tensor, global_offsets, M=10):
            tf.py_function(lambda: _original("shift_and_sum"), [], [])
            return tf.zeros((1, 1, 1), tf.complex64)

        def reassemble_position(obj_tensor, global_offsets, M=10):
            _original("reassemble_position")

        def shift_and_sum_old(obj_tensor, global_offsets, M=10):
            _original("shift_and_sum_old")

        def reassemble_position_old(obj_tensor, global_offsets, M=10):
            _original("reassemble_position_old")
    """,
    # Import patterns of PtychoPINN's callers.
    "ptycho/workflows/__init__.py": "",
    "ptycho/workflows/components.py": """
        from ptycho.tf_helper import reassemble_position

        def reassemble(obj, global_offsets, M):
            return reassemble_position(obj, global_offsets, M=M).numpy()
    """,
    "ptycho/model.py": """
        import tensorflow as tf
        from ptycho import tf_helper as hh

        @tf.function
        def traced(obj, global_offsets):
            return hh.reassemble_position(obj, global_offsets, M=16)

        def summed(obj, global_offsets):
            return hh.shift_and_sum(obj, global_offsets, M=16)
    """,
}


@pytest.fixture
def ptycho_stand_in(tmp_path, monkeypatch):
    for path, text in STAND_IN.items():
        file = tmp_path / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    import ptychostitch.ptychopinn as installer

    installer.uninstall()
    for name in [m for m in sys.modules if m == "ptycho" or m.startswith("ptycho.")]:
        del sys.modules[name]


def test_installer_replaces_and_restores_ptychopinn_functions(ptycho_stand_in, golden_dir):
    import ptychostitch.ptychopinn as installer
    from ptycho import tf_helper
    from ptycho.workflows import components  # imported *before* install: a bound name

    originals = {name: getattr(tf_helper, name) for name in FUNCTIONS}
    f = np.load(golden_dir / "basic4.npz")
    obj, off, M = f["obj"], f["offsets"], int(f["M"])
    # PtychoPINN's data container layout: (n, 1, 2, 1).
    container = off.reshape(-1, 2)[:, None, :, None]

    installer.install()
    assert installer.installed()
    # A name bound by `from ptycho.tf_helper import ...` before install() was rebound.
    assert same_bits(components.reassemble(obj, container, M), f["reassemble_position_old"])
    # Module-attribute calls, a traced tf.function, and PtychoPINN's .numpy() on the result.
    from ptycho import model

    assert same_bits(model.traced(tf.constant(obj), tf.constant(off)).numpy(), f["reassemble_position_old"])
    out = model.summed(obj, off)
    assert isinstance(out, tf.Tensor), "PtychoPINN's contract: a tf.Tensor even for NumPy input"
    assert same_bits(out.numpy(), f["shift_and_sum_old"])
    assert same_bits(tf_helper.reassemble_position_old(obj, off, M).numpy(), f["reassemble_position_old"])
    installer.install()  # a second install is a no-op

    installer.uninstall()
    assert not installer.installed()
    assert {name: getattr(tf_helper, name) for name in FUNCTIONS} == originals
    with pytest.raises(RuntimeError, match="original reassemble_position"):
        components.reassemble(obj, off, M)
