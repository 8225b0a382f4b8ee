"""Pictures of the built-in tasks, drawn with numpy: ``render_mode="rgb_array"`` needs no
pygame (gymnasium's classic-control renderers do), and ``"human"`` shows the same frames in a
matplotlib window.

Frames are ``uint8 [H, W, 3]``. Written by hand because the drawing needed here (filled
rectangles, thick line segments, discs) is a few lines of numpy, against a windowing
dependency that does not install everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

RENDER_MODES = ["rgb_array", "human"]
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (128, 128, 128)
POLE = (202, 152, 101)  # gymnasium's cart-pole colours
AXLE = (129, 132, 203)
GREEN = (60, 170, 80)
RED = (200, 60, 60)


def check_render_mode(render_mode: str | None) -> str | None:
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be None or one of {RENDER_MODES}, got {render_mode!r}")
    return render_mode


def canvas(height: int, width: int, color: tuple[int, int, int] = WHITE) -> np.ndarray:
    """A blank frame ``[height, width, 3]``."""
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[:] = color
    return frame


def fill_rect(frame: np.ndarray, x0: float, y0: float, x1: float, y1: float, color) -> None:
    """Fill the pixels with ``x0 <= x < x1`` and ``y0 <= y < y1`` (y down), clipped."""
    h, w = frame.shape[:2]
    c0, c1 = int(max(0, round(min(x0, x1)))), int(min(w, round(max(x0, x1))))
    r0, r1 = int(max(0, round(min(y0, y1)))), int(min(h, round(max(y0, y1))))
    if c0 < c1 and r0 < r1:
        frame[r0:r1, c0:c1] = color


def _paint(frame: np.ndarray, mask: np.ndarray, color) -> None:
    frame[mask] = color


def draw_segment(frame: np.ndarray, p0, p1, width: float, color) -> None:
    """A thick line from ``p0`` to ``p1`` (``(x, y)`` pixels, y down) with round ends."""
    h, w = frame.shape[:2]
    half = width / 2.0
    xs = np.array([p0[0], p1[0]])
    ys = np.array([p0[1], p1[1]])
    c0, c1 = int(max(0, np.floor(xs.min() - half))), int(min(w, np.ceil(xs.max() + half) + 1))
    r0, r1 = int(max(0, np.floor(ys.min() - half))), int(min(h, np.ceil(ys.max() + half) + 1))
    if c0 >= c1 or r0 >= r1:
        return
    yy, xx = np.mgrid[r0:r1, c0:c1] + 0.5
    d = np.array([p1[0] - p0[0], p1[1] - p0[1]], dtype=np.float64)
    length2 = float(d @ d)
    t = np.zeros_like(xx) if length2 == 0 else ((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1])
    t = np.clip(t / length2, 0.0, 1.0) if length2 else t
    dist2 = (xx - (p0[0] + t * d[0])) ** 2 + (yy - (p0[1] + t * d[1])) ** 2
    _paint(frame[r0:r1, c0:c1], dist2 <= half * half, color)


def fill_disc(frame: np.ndarray, center, radius: float, color) -> None:
    draw_segment(frame, center, center, 2 * radius, color)


class HumanWindow:
    """Shows frames in a matplotlib window (``render_mode="human"``)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._image: Any = None

    def show(self, frame: np.ndarray, fps: float) -> None:
        import matplotlib.pyplot as plt

        if self._image is None:
            plt.ion()
            _, ax = plt.subplots(num=self.title)
            ax.set_axis_off()
            self._image = ax.imshow(frame)
        else:
            self._image.set_data(frame)
        plt.pause(1.0 / fps)

    def close(self) -> None:
        if self._image is not None:
            import matplotlib.pyplot as plt

            plt.close(self._image.figure)
            self._image = None


# -- the tasks -------------------------------------------------------------------------------


def cart_and_poles(
    x: float,
    angles: list[float],
    lengths: list[float],
    *,
    track_limit: float = 2.4,
    size: tuple[int, int] = (400, 600),
) -> np.ndarray:
    """A cart at ``x`` [m] on a track of ``±track_limit`` with poles at ``angles`` [rad from
    upright, positive clockwise as in gymnasium] of half-lengths ``lengths`` [m]."""
    height, width = size
    frame = canvas(height, width)
    scale = width / (2 * track_limit * 1.25)
    track_y = height * 0.75
    cart_w, cart_h = 50.0, 30.0
    fill_rect(frame, 0, track_y, width, track_y + 1, BLACK)
    for limit in (-track_limit, track_limit):
        px = width / 2 + limit * scale
        fill_rect(frame, px - 1, track_y - 10, px + 1, track_y + 10, GREY)
    cx = width / 2 + x * scale
    fill_rect(frame, cx - cart_w / 2, track_y - cart_h, cx + cart_w / 2, track_y, BLACK)
    axle = (cx, track_y - cart_h * 0.75)
    for angle, half in zip(angles, lengths, strict=True):
        tip = (
            axle[0] + 2 * half * scale * np.sin(angle),
            axle[1] - 2 * half * scale * np.cos(angle),
        )
        draw_segment(frame, axle, tip, 10.0, POLE)
    fill_disc(frame, axle, 5.0, AXLE)
    return frame


def pendulum(theta: float, size: int = 300) -> np.ndarray:
    """A pendulum at ``theta`` [rad, 0 = upright]."""
    frame = canvas(size, size)
    center = (size / 2, size / 2)
    length = size * 0.38
    tip = (center[0] + length * np.sin(theta), center[1] - length * np.cos(theta))
    draw_segment(frame, center, tip, size * 0.07, RED)
    fill_disc(frame, center, size * 0.02, BLACK)
    return frame


def tmaze(length: int, position: int, goal_north: bool, cell: int = 24) -> np.ndarray:
    """The corridor (start at the left), the junction with its two arms, the goal arm
    green, the agent a black disc."""
    width = (length + 3) * cell
    frame = canvas(3 * cell + 2 * cell, width, GREY)
    top = cell  # row of the North arm
    for column in range(length + 1):
        x0 = (column + 1) * cell
        fill_rect(frame, x0 + 1, top + cell + 1, x0 + cell - 1, top + 2 * cell - 1, WHITE)
    junction_x = (length + 1) * cell
    for row, north in ((top, True), (top + 2 * cell, False)):
        color = GREEN if north == goal_north else RED
        fill_rect(frame, junction_x + 1, row + 1, junction_x + cell - 1, row + cell - 1, color)
    sign = GREEN if goal_north else RED
    fill_rect(frame, cell + 2, top + cell + 2, cell + 8, top + cell + 8, sign)  # the road sign
    center = ((position + 1.5) * cell, top + 1.5 * cell)
    fill_disc(frame, center, cell * 0.3, BLACK)
    return frame


class RenderedEnv:
    """Mixin of a single env whose :meth:`frame` draws its current state: ``render()`` returns
    it (``"rgb_array"``) or shows it (``"human"``, also after every ``reset``/``step``)."""

    render_mode: str | None = None
    _human_window: HumanWindow | None = None

    def frame(self) -> np.ndarray:
        raise NotImplementedError

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        frame = self.frame()
        if self.render_mode == "rgb_array":
            return frame
        if self._human_window is None:
            self._human_window = HumanWindow(type(self).__name__)
        self._human_window.show(frame, float(self.metadata.get("render_fps", 30)))  # type: ignore[attr-defined]
        return None

    def _render_human(self) -> None:
        if self.render_mode == "human":
            self.render()

    def close(self) -> None:
        if self._human_window is not None:
            self._human_window.close()
            self._human_window = None
        super().close()  # type: ignore[misc]
