import torch

from vsrblocks.memory_format import memory_format_of, to_memory_format


def test_formats_are_recognised_and_kept():
    x = torch.randn(2, 3, 4, 5)
    nhwc = to_memory_format(x, torch.channels_last)
    assert memory_format_of(x) == torch.contiguous_format
    assert memory_format_of(nhwc) == torch.channels_last
    assert to_memory_format(nhwc, torch.channels_last) is nhwc
    assert torch.equal(to_memory_format(nhwc, torch.contiguous_format), x)


def test_ambiguous_and_non_frame_tensors_count_as_contiguous():
    one_pixel = torch.randn(2, 3, 1, 1)  # both layouts at once
    assert memory_format_of(one_pixel.contiguous(memory_format=torch.channels_last)) == torch.contiguous_format
    clip = torch.randn(1, 2, 3, 4, 5)
    assert memory_format_of(clip) == torch.contiguous_format
    assert to_memory_format(clip, torch.channels_last) is clip


def test_graph_capture_leaves_layouts_to_the_compiler(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    nhwc = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    assert memory_format_of(nhwc) == torch.contiguous_format
    x = torch.randn(2, 3, 4, 5)
    assert to_memory_format(x, torch.channels_last) is x
