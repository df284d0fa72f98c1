import pytest
import torch

from bpclip_core import InputError
from bpclip_core.inputs.protocol import TestTimeProtocol, crop_boxes


def test_resize_shrinks_the_short_side_only():
    protocol = TestTimeProtocol("resize", size=64)
    views, _, counts = protocol.batch_views(torch.rand(2, 3, 128, 256))
    assert views.shape == (2, 3, 64, 128) and counts == [1, 1]
    small = torch.rand(1, 3, 40, 50)
    assert protocol.batch_views(small)[0] is small


def test_crops_cover_corners_and_centre_at_the_same_places_for_pairs():
    protocol = TestTimeProtocol("crops", size=32, num_crops=5)
    image = torch.arange(64 * 96, dtype=torch.float32).view(1, 1, 64, 96).expand(2, 3, 64, 96) / (64 * 96)
    views, refs, counts = protocol.batch_views(image, image.clone())
    assert views.shape == (10, 3, 32, 32) and counts == [5, 5]
    assert torch.equal(views, refs)
    assert torch.equal(views[1], image[0, :, :32, :32])  # top-left corner of image 0
    assert torch.equal(views[9], image[1, :, 32:, 64:])  # bottom-right corner of image 1


def test_crop_boxes_stay_inside_and_are_distinct():
    boxes = crop_boxes(100, 150, 40, 9)
    assert len(boxes) == len(set(boxes)) == 9
    assert all(0 <= t <= 60 and 0 <= x <= 110 and (h, w) == (40, 40) for t, x, h, w in boxes)
    assert crop_boxes(20, 30, 40, 1) == [(0, 0, 20, 30)]


def test_full_protocol_limit_and_bad_protocols():
    with pytest.raises(InputError, match="use the 'resize' or 'crops' protocol"):
        TestTimeProtocol("full", max_pixels=1000).batch_views(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="unknown test-time protocol"):
        TestTimeProtocol("tiles")
    with pytest.raises(InputError, match="same size"):
        TestTimeProtocol().pair_views(torch.rand(3, 40, 40), torch.rand(3, 40, 48))
