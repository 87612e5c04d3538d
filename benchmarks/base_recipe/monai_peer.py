"""The plain MONAI recipe a new user would write (issue "Base accuracy"), self-contained: no leanseg import.

UNet(16-256, strides 2, 2 residual units, instance norm), Adam 1e-3 with weight decay 1e-5 and poly decay over
the clock, batch 4 of 32x48x32 patches (half foreground-centred), random flips, per-image z-score, DiceCE,
Gaussian sliding window with overlap 0.5. Trains on an MSD folder's cases minus --val-ids for --minutes, then
writes the label maps of --val-ids (the original grid: no resampling) into --out.

    python benchmarks/base_recipe/monai_peer.py --data DATA --val-ids ids.txt --out PRED --minutes 15
"""

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai import transforms as T
from monai.data import DataLoader, Dataset
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True)
ap.add_argument("--val-ids", required=True, help="file with one case id per line")
ap.add_argument("--out", required=True)
ap.add_argument("--minutes", type=float, default=15.0)
ap.add_argument("--iterations", type=int, default=None, help="stop here instead (a smoke run)")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--seed", type=int, default=0)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(args.seed)
data = Path(args.data)
meta = json.loads((data / "dataset.json").read_text())
val_ids = set(Path(args.val_ids).read_text().split())
items = [{"image": str(data / e["image"]), "label": str(data / e["label"])} for e in meta["training"]]
case = lambda d: Path(d["image"]).name.split(".")[0]  # noqa: E731
train_items, val_items = [d for d in items if case(d) not in val_ids], [d for d in items if case(d) in val_ids]
load = [T.LoadImaged(["image", "label"]), T.EnsureChannelFirstd(["image", "label"]), T.NormalizeIntensityd("image")]
train_tf = T.Compose(
    load
    + [
        T.SpatialPadd(["image", "label"], (32, 48, 32)),
        T.RandCropByPosNegLabeld(["image", "label"], "label", (32, 48, 32), pos=1, neg=1, num_samples=1),
        *[T.RandFlipd(["image", "label"], prob=0.5, spatial_axis=a) for a in range(3)],
    ]
)
loader = DataLoader(Dataset(train_items, train_tf), batch_size=4, shuffle=True, num_workers=1, persistent_workers=True)
net = UNet(3, 1, len(meta["labels"]), (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2, norm="instance")
opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
budget, start, it = args.minutes * 60, time.perf_counter(), 0
while it < (args.iterations or 10**9) and time.perf_counter() - start < budget:
    for batch in loader:
        p = min((time.perf_counter() - start) / budget, 1.0)
        for g in opt.param_groups:
            g["lr"] = 1e-3 * (1 - p) ** 0.9
        opt.zero_grad()
        loss_fn(net(batch["image"]), batch["label"]).backward()
        opt.step()
        it += 1
        if it >= (args.iterations or 10**9) or time.perf_counter() - start >= budget:
            break
seconds = time.perf_counter() - start
net.eval()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
with torch.no_grad():
    for d in val_items:
        x = T.Compose(load)(d)["image"][None]
        logits = sliding_window_inference(x, (32, 48, 32), 4, net, overlap=0.5, mode="gaussian")
        ref = nib.load(d["label"])
        label = logits.argmax(1)[0].numpy().astype(np.uint8)
        nib.save(nib.Nifti1Image(label, ref.affine), str(out / Path(d["label"]).name))
print(json.dumps({"iterations": it, "train_seconds": seconds}))
