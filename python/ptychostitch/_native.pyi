"""Type stubs for the extension module behind ``ptychostitch``."""

from typing import List, Tuple

import numpy as np

__version__: str

def stitch(
    patches: np.ndarray,
    offsets: np.ndarray,
    crop: int,
    op: str,
    reference: bool = False,
    threads: int = 0,
) -> Tuple[np.ndarray, List[str]]: ...

class Plan:
    def __init__(self, offsets: np.ndarray, patch_size: int, crop: int, threads: int = 0) -> None: ...
    def run(self, patches: np.ndarray, op: str, reference: bool = False) -> np.ndarray: ...
    def weights(self) -> np.ndarray: ...
    def window(
        self,
        patches: np.ndarray,
        indices: np.ndarray,
        op: str,
        rows: Tuple[int, int],
        cols: Tuple[int, int],
    ) -> np.ndarray: ...
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
