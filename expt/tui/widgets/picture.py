"""A picture in the terminal through textual-image: Kitty or Sixel graphics where the terminal has
them, coloured half blocks otherwise. ``mode`` pins one way (the tests pin half blocks, which
render the same everywhere)."""

from __future__ import annotations

from typing import Any

from textual.widget import Widget
from textual_image import widget as image_widgets  # queries the terminal once, before Textual starts

MODES = ("auto", "halfcell", "sixel", "tgp", "unicode")


def picture_class(mode: str = "auto") -> type[Widget]:
    classes = {"auto": image_widgets.Image, "halfcell": image_widgets.HalfcellImage,
               "sixel": image_widgets.SixelImage, "tgp": image_widgets.TGPImage,
               "unicode": image_widgets.UnicodeImage}
    return classes.get(mode, image_widgets.Image)


def picture(image: Any, mode: str = "auto", classes: str = "picture") -> Widget:
    """A widget showing ``image`` (a PIL image already in memory), sized by its CSS classes."""
    return picture_class(mode)(image, classes=classes)
