"""The MLflow pyfunc model of a trained generator: uint8 images in, stylised uint8 images out.

MLflow logs this file as "model code" and runs it when the model is loaded (`mlflow.pyfunc
.load_model`, `mlflow models serve`); the package never imports it. It needs only numpy, torch
and mlflow, so a registered model runs wherever those are installed, without culturegan.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel, PythonModelContext

# The generator downsamples twice (x1/4): sides are padded up to a multiple of 4, and the
# residual blocks reflect-pad the 1/4-size map by one pixel, which needs at least 2 pixels there.
MULTIPLE = 4
MIN_SIDE = 8


def _bad_input(message: str) -> MlflowException:
    # INVALID_PARAMETER_VALUE is answered as HTTP 400 with this message by the scoring server.
    return MlflowException.invalid_parameter_value(message)


def check_images(images: Any, max_side: int, max_images: int) -> np.ndarray:
    """The request as a (N, H, W, 3) uint8 array, or an MlflowException saying what is wrong."""
    if not isinstance(images, np.ndarray):
        raise _bad_input(
            f"expected a uint8 array of shape (N, H, W, 3), got {type(images).__name__}"
        )
    if images.dtype != np.uint8:
        # Ragged batches arrive as 1-D object arrays and pass MLflow's schema check.
        raise _bad_input(
            f"expected uint8 RGB pixels of shape (N, H, W, 3), got dtype {images.dtype} with shape "
            f"{images.shape}; images in one request must share one size"
        )
    if images.ndim != 4 or images.shape[3] != 3:
        raise _bad_input(f"expected shape (N, H, W, 3) (RGB, channels last), got {images.shape}")
    n, h, w, _ = images.shape
    if n == 0:
        raise _bad_input("the request holds no images")
    if n > max_images:
        raise _bad_input(f"{n} images in one request; the limit is {max_images}: send fewer")
    if min(h, w) < MIN_SIDE or max(h, w) > max_side:
        raise _bad_input(
            f"image size {h}x{w} is outside the accepted {MIN_SIDE}..{max_side} pixels per side;"
            " resize it first"
        )
    return images


class Stylizer(PythonModel):
    """Runs the exported generator at the input's own resolution (it is fully convolutional).

    No resizing: an image keeps its size and detail. Brush strokes and textures keep the pixel
    scale they had in training (model config `image_size`), so large inputs look finer-grained
    than the training images; resize before sending to get the training look. Sides that are not
    multiples of 4 are reflect-padded for the network and cropped back.
    """

    def load_context(self, context: PythonModelContext) -> None:
        import torch

        # Written by culturegan.registry.mlflow_models from params.yaml's registry section.
        config = context.model_config
        self.max_side = int(config["max_side"])
        self.max_images = int(config["max_images"])
        self.batch_size = int(config["batch_size"])
        program = torch.export.load(context.artifacts["generator"])
        self.net = program.module()

    # np.ndarray is a type hint MLflow accepts without inferring a schema from it (the logged
    # tensor signature stays the contract); with no hint at all it warns on every load.
    def predict(
        self, context: PythonModelContext, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        images = check_images(model_input, self.max_side, self.max_images)
        h, w = images.shape[1:3]
        pad_h, pad_w = -h % MULTIPLE, -w % MULTIPLE
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                # A copy: request arrays may be read-only, which torch.from_numpy warns about.
                x = torch.from_numpy(np.array(images[start : start + self.batch_size], copy=True))
                x = x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (B, 3, H, W) in [-1, 1]
                if pad_h or pad_w:
                    x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
                y = self.net(x)[:, :, :h, :w].float().clamp(-1.0, 1.0)
                # The same rounding as evaluation (culturegan.evaluation.evaluate.module_translator).
                y = ((y + 1.0) * 127.5).round().to(torch.uint8)
                out.append(y.permute(0, 2, 3, 1).numpy())  # (B, H, W, 3)
        return np.concatenate(out)


mlflow.models.set_model(Stylizer())
