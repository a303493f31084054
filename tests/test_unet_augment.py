import torch

from sharp_fpn.unet.augment import augment, colour_jitter, normalize, rotate_flip


def test_masks_follow_their_images():
    torch.manual_seed(0)
    masks = (torch.rand(16, 1, 8, 8) > 0.5).float()
    images = masks.repeat(1, 3, 1, 1)  # the image *is* the mask: geometry must stay paired
    new_images, new_masks = rotate_flip(images, masks)
    assert torch.equal(new_images[:, :1], new_masks)
    assert not torch.equal(new_masks, masks)  # something moved
    # each result is one of the 8 symmetries of its own mask
    for before, after in zip(masks, new_masks):
        variants = [torch.rot90(before, k, (-2, -1)) for k in range(4)]
        variants += [v.flip(-1) for v in variants]
        assert any(torch.equal(after, v) for v in variants)


def test_colour_changes_keep_grey_grey_and_stay_in_range():
    torch.manual_seed(0)
    grey = torch.rand(32, 1, 6, 6).repeat(1, 3, 1, 1)
    out = colour_jitter(grey)
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-5) and torch.allclose(out[:, 1], out[:, 2], atol=1e-5)
    colour = colour_jitter(torch.rand(32, 3, 6, 6))
    assert colour.min() >= 0 and colour.max() <= 1


def test_augment_keeps_shapes_and_normalize_uses_imagenet_statistics():
    images, masks = augment(torch.rand(2, 3, 8, 8), torch.zeros(2, 1, 8, 8))
    assert images.shape == (2, 3, 8, 8) and masks.shape == (2, 1, 8, 8)
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert normalize(mean).abs().max() < 1e-6
