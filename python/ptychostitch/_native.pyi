"""Type stubs for the extension module behind ``ptychostitch``."""

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

__version__: str

class GpuUnavailable(RuntimeError): ...

class DeviceArray:
    """An array in GPU memory this package allocated (a canvas, or a ``device_empty`` output);
    import it with any framework's ``from_dlpack``."""

    def __dlpack__(
        self,
        *,
        stream: Any = None,
        max_version: Optional[Tuple[int, int]] = None,
        dl_device: Optional[Tuple[int, int]] = None,
        copy: Optional[bool] = None,
    ) -> Any: ...
    def __dlpack_device__(self) -> Tuple[int, int]: ...
    @property
    def shape(self) -> Tuple[int, ...]: ...
    @property
    def dtype(self) -> str: ...

def device_empty(shape: List[int], dtype: str, ordinal: int, wait_for_all_streams: bool = False) -> DeviceArray: ...

def stitch(
    patches: np.ndarray,
    offsets: np.ndarray,
    crop: int,
    op: str,
    reference: bool = False,
    threads: int = 0,
) -> Tuple[np.ndarray, List[str]]: ...

def gpu_available() -> Tuple[bool, Optional[str], Optional[str]]: ...

def cli(argv: List[str]) -> int: ...

def add_library_dirs(dirs: List[str]) -> None: ...

def read_npy_crops(
    path: str, identity: Tuple[int, int, int], indices: np.ndarray, start: int, kept: int, out: np.ndarray
) -> None: ...

def splat(
    canvas: np.ndarray,
    weights: np.ndarray,
    patches: np.ndarray,
    positions: np.ndarray,
    patch_weight: Optional[np.ndarray] = None,
    edge: str = "clip",
    threads: int = 0,
    reference: bool = False,
) -> Tuple[int, int]: ...

def dlpack_probe(obj: Any) -> Tuple[int, int, List[int], Optional[List[int]]]: ...

class Plan:
    def __init__(self, offsets: np.ndarray, patch_size: int, crop: int, threads: int = 0) -> None: ...
    def run(self, patches: np.ndarray, op: str, reference: bool = False) -> np.ndarray: ...
    def run_cuda(
        self, patches: Any, op: str, stream: Optional[int] = None, out: Any = None
    ) -> Optional[DeviceArray]: ...
    def weights(self) -> np.ndarray: ...
    def window(
        self,
        patches: np.ndarray,
        indices: np.ndarray,
        op: str,
        rows: Tuple[int, int],
        cols: Tuple[int, int],
    ) -> np.ndarray: ...
    def window_runs(
        self,
        chunks: List[np.ndarray],
        starts: List[int],
        op: str,
        rows: Tuple[int, int],
        cols: Tuple[int, int],
    ) -> np.ndarray: ...
    def vjp(
        self, patches: np.ndarray, cotangent: np.ndarray, op: str, output: Optional[np.ndarray] = None,
        wrt_patches: bool = True, wrt_offsets: bool = True, reference: bool = False,
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]: ...
    def vjp_cuda(
        self, patches: Any, cotangent: Any, op: str, output: Any = None, patch_grad: Any = None,
        offsets_grad: Any = None, stream: Optional[int] = None,
    ) -> None: ...
    def footprints(self) -> np.ndarray: ...
    @property
    def warnings(self) -> List[str]: ...
    @property
    def canvas_side(self) -> int: ...
    @property
    def pad(self) -> int: ...
    @property
    def center(self) -> Tuple[float, float]: ...
    @property
    def patch_size(self) -> int: ...
    @property
    def n(self) -> int: ...
    @property
    def kernel(self) -> str: ...

class Extraction:
    """PtychoPINN's ``extract_patches_position`` (``convention="tf"``) or torch's
    ``extract_channels_from_region`` (``"torch"``) as a plan: ``offsets`` ``(B·C, 2)`` ``[x, y]``."""

    def __init__(
        self, offsets: np.ndarray, per_image: int, image_side: int, patch_size: int, threads: int = 0,
        convention: str = "tf", same_frame: bool = False,
    ) -> None: ...
    def extract(self, images: np.ndarray, reference: bool = False) -> np.ndarray: ...
    def vjp(
        self, images: np.ndarray, cotangent: np.ndarray, wrt_images: bool = True, wrt_offsets: bool = True,
        reference: bool = False,
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]: ...
    def extract_cuda(
        self, images: Any, out: Any, stream: Optional[int] = None, positions: Any = None, channel_layout: bool = False
    ) -> None: ...
    def vjp_cuda(
        self, images: Any, cotangent: Any, image_grad: Any = None, offsets_grad: Any = None,
        channel_layout: bool = False, stream: Optional[int] = None, positions: Any = None,
    ) -> None: ...
    @property
    def output_shape(self) -> Tuple[int, int, int]: ...

#: The options the CUDA driver compiles its kernel with (``gpu::NVRTC_OPTIONS``).
NVRTC_OPTIONS: List[str]

def xla_handlers() -> Dict[str, Any]:
    """``{"cpu": capsule}``: the XLA FFI handler of every operator, for
    ``jax.ffi.register_ffi_target`` (the ``op`` attribute names the operator)."""

def parallel_runs() -> int:
    """Runs (of every operation) that started more than one worker thread in this process."""

def check_region_options(
    convention: str, recentre: bool, numerator: str, denominator: str, epsilon: float, support: Optional[str] = None,
    threshold_value: float = 0.0, scale: float = 1.0,
) -> None:
    """Raises ``ValueError`` naming the parameter where a region reassembly's options leave its
    result undefined (``RegionOptions::validate``)."""

class Region:
    """The training-path reassembly (``ptychostitch::region``): ``positions`` ``(B·C, 2)``,
    ``samples`` B, patch side N, region side P; see ``ptychostitch.reassemble_regions``."""

    def __init__(
        self, positions: np.ndarray, samples: int, patch_size: int, side: int, convention: str, recentre: bool,
        numerator: str, denominator: str, epsilon: float, support: Optional[str] = None,
        threshold_value: float = 0.0, threads: int = 0, scale: float = 1.0,
    ) -> None: ...
    def reassemble(self, patches: np.ndarray, weights: np.ndarray, reference: bool = False) -> np.ndarray: ...
    def reassemble_cuda(
        self, patches: Any, weights: Any, out: Any, stream: Optional[int] = None, positions: Any = None,
        channel_layout: bool = False,
    ) -> None: ...
    def support_cuda(
        self, patches: Any, weights: Any, out: Any, stream: Optional[int] = None, positions: Any = None,
        channel_layout: bool = False,
    ) -> None: ...
    @property
    def support_option(self) -> Optional[Tuple[str, float]]: ...
    def vjp_cuda(
        self, patches: Any, weights: Any, cotangent: Any, patch_grad: Any = None, positions_grad: Any = None,
        channel_layout: bool = False, stream: Optional[int] = None, positions: Any = None,
    ) -> None: ...
    def support(self, weights: np.ndarray, kind: str, value: float) -> np.ndarray: ...
    def vjp(
        self, patches: np.ndarray, weights: np.ndarray, cotangent: np.ndarray, wrt_patches: bool = True,
        wrt_positions: bool = True, wrt_weights: bool = False, reference: bool = False,
        output: Optional[np.ndarray] = None,
    ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]: ...
    @property
    def shape(self) -> Tuple[int, int, int]: ...
