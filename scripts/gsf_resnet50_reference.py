#!/usr/bin/env python3
"""Whole-model GSF reference on ResNet-50: torchvision's ResNet-50 with the *official* GSF
module (swathikirans/GSF `gsf.py`, downloaded yourself) after each bottleneck's `conv3`,
before `bn3`, 25% of the channels gated — the placement of the official `resnetGSFModels.py`
(whose `_resnet` cannot run as published: `gsf_ch_ratio **kwargs` raises) — random weights
and BN statistics, TSN head (dropout, `new_fc`, average over 8 segments), saved as an
official-format checkpoint with an input and its logits.

    /tmp/torchvenv/bin/python scripts/gsf_resnet50_reference.py /path/to/GSF OUT_DIR
    gateshift forward --checkpoint OUT_DIR/gsf_resnet50_seg8.pth.tar --arch resnet50 \
        --temporal gsf --segments 8 --input OUT_DIR/gsf_resnet50_seg8_io.safetensors --output out.safetensors
"""
import os
import sys
import types

import torch
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, sys.argv[1])
from gsf import GSF  # noqa: E402  (official)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gsf_bninception_reference import randomise_bn  # noqa: E402

SEGMENTS, CLASSES = 8, 174


def bottleneck_forward(self, x):
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.gsf(self.conv3(out)))
    if self.downsample is not None:
        identity = self.downsample(x)
    return self.relu(out + identity)


torch.manual_seed(0)
base = torchvision.models.resnet50(weights=None)
for layer in [base.layer1, base.layer2, base.layer3, base.layer4]:
    for block in layer:
        block.gsf = GSF(block.conv3.out_channels, num_segments=SEGMENTS, gsf_ch_ratio=25)
        block.forward = types.MethodType(bottleneck_forward, block)
base.fc = torch.nn.Identity()
new_fc = torch.nn.Linear(2048, CLASSES)
randomise_bn(base)
base.eval()
state = {f"module.base_model.{k}": v for k, v in base.state_dict().items()}
state.update({f"module.new_fc.{k}": v for k, v in new_fc.state_dict().items()})
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
torch.save({"state_dict": state, "arch": "resnet50"}, f"{out}/gsf_resnet50_seg8.pth.tar")
x = torch.randn(1, 3 * SEGMENTS, 224, 224)
with torch.no_grad():
    logits = new_fc(base(x.view(-1, 3, 224, 224))).view(1, SEGMENTS, -1).mean(1)
save_file({"input": x.contiguous(), "logits": logits.contiguous()}, f"{out}/gsf_resnet50_seg8_io.safetensors")
print(f"wrote {out}: {len(state)} tensors, logits {tuple(logits.shape)}")
