"""Visual outputs: videos and contact sheets of rendered frames."""

from lyra.viz.video import (
    contact_sheet,
    to_uint8,
    write_contact_sheet,
    write_png,
    write_video,
)

__all__ = ["contact_sheet", "to_uint8", "write_contact_sheet", "write_png", "write_video"]
