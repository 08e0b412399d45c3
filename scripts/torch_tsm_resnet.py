"""PyTorch eager reference of TSM ResNet (residual shift, torchvision layout) for
`docs/PERFORMANCE.md`, next to `gateshift bench model --arch resnet50 --temporal tsm`.

Run as a script, it checks the model: ResNet-18 loaded from the official-format TSM fixture
checkpoint must give the fixture's logits (ResNet-50 is the same code with bottleneck blocks).
With `--write-reference DIR` it then writes a random-weight TSM ResNet-50 checkpoint in the
official layout with an input and its logits, for `gateshift forward` (docs/FIDELITY.md).
`torch_gpu_bench.py --arch resnet50` times it, on a GPU or with `--device cpu`.

Run in a throwaway virtualenv, never as a project dependency:
    /tmp/torchvenv/bin/python scripts/torch_tsm_resnet.py ../shared/fixtures
"""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_cpu_bench import check_against_fixture

# depth: (bottleneck, blocks per stage)
LAYOUTS = {18: (False, [2, 2, 2, 2]), 34: (False, [3, 4, 6, 3]), 50: (True, [3, 4, 6, 3]), 101: (True, [3, 4, 23, 3])}


class ResidualShift(nn.Module):
    """TSM's shift of the residual branch's input, then the branch's first convolution (`net`,
    the official wrapper's attribute name, so the checkpoint keys match)."""

    def __init__(self, net, segments, div):
        super().__init__()
        self.net, self.segments, self.div = net, segments, div

    def forward(self, x):
        if self.segments:
            bt, c, h, w = x.shape
            v = x.view(bt // self.segments, self.segments, c, h, w)
            f = c // self.div
            out = torch.zeros_like(v)
            out[:, :-1, :f] = v[:, 1:, :f]  # frame t takes t+1
            out[:, 1:, f : 2 * f] = v[:, :-1, f : 2 * f]  # frame t takes t-1
            out[:, :, 2 * f :] = v[:, :, 2 * f :]
            x = out.view(bt, c, h, w)
        return self.net(x)


class Block(nn.Module):
    def __init__(self, cin, planes, stride, bottleneck, segments, div):
        super().__init__()
        cout = planes * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1 = ResidualShift(nn.Conv2d(cin, planes, 1, bias=False), segments, div)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
        else:
            self.conv1 = ResidualShift(nn.Conv2d(cin, planes, 3, stride, 1, bias=False), segments, div)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(planes), nn.BatchNorm2d(planes)
        self.bottleneck = bottleneck
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.bottleneck:
            y = self.bn3(self.conv3(F.relu(y)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(y + identity)


class TsmResNet(nn.Module):
    """ResNet-`depth` with TSM's residual shift in every block (`segments` 0: TSN), average
    consensus over the segments."""

    def __init__(self, depth=50, segments=8, div=8, classes=174, shift=True):
        super().__init__()
        bottleneck, blocks = LAYOUTS[depth]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (n, planes) in enumerate(zip(blocks, [64, 128, 256, 512])):
            layer = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                layer.append(Block(cin, planes, stride, bottleneck, segments if shift else 0, div))
                cin = planes * (4 if bottleneck else 1)
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.new_fc = nn.Linear(cin, classes)
        self.segments = segments

    def forward(self, clip):
        n = clip.shape[0]
        x = clip.view(n * self.segments, 3, clip.shape[2], clip.shape[3])
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.new_fc(x.mean((2, 3))).view(n, self.segments, -1).mean(1)

    def load_official(self, state_dict):
        mine = {}
        for key, value in state_dict.items():
            key = key.removeprefix("module.").removeprefix("base_model.")
            if not key.endswith("num_batches_tracked"):
                mine[key] = value
        self.load_state_dict(mine, strict=True)


def write_reference(out, depth, segments, clips=2):
    """A random-weight TSM ResNet-`depth` in the official checkpoint layout (`module.base_model.*`,
    `module.new_fc.*`, `.pth.tar`), its BNs calibrated on one random batch, with an input and
    its eval-mode logits (`tsm_resnet{depth}_io.safetensors`): for `gateshift forward`."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = TsmResNet(depth=depth, segments=segments)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0  # running statistics = this batch's
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    x = torch.randn(clips, 3 * segments, 224, 224)
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    prefix = lambda k: f"module.{k}" if k.startswith("new_fc.") else f"module.base_model.{k}"  # noqa: E731
    state = {prefix(k): v for k, v in model.state_dict().items()}
    name = f"{out}/tsm_resnet{depth}_seg{segments}"
    torch.save({"state_dict": state, "arch": f"resnet{depth}"}, f"{name}.pth.tar")
    save_file({"input": x.contiguous(), "logits": logits.contiguous()}, f"{name}_io.safetensors")
    print(f"wrote {name}.pth.tar and {name}_io.safetensors (logits max |x| {logits.abs().max():.3f})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixtures")
    ap.add_argument("--write-reference", metavar="DIR", help="also write a random TSM ResNet-50 and its logits there")
    ap.add_argument("--segments", type=int, default=8)
    a = ap.parse_args()
    fixture = f"{a.fixtures}/tsm_resnet18_shift8_blockres_seg8"
    check_against_fixture(TsmResNet(depth=18), fixture, "resnet18+tsm")
    if a.write_reference:
        write_reference(a.write_reference, 50, a.segments)


if __name__ == "__main__":
    main()
