"""The data sets train_resnet.py reads, as (train, test, channels, classes).

- imagefolder: DIR/train and DIR/val in ImageNet layout (one folder per
  class), read with torchvision's ImageFolder and the standard pipeline:
  RandomResizedCrop + horizontal flip for training, resize + center crop
  for validation, ImageNet mean/std normalisation.
- fashion-mnist: Debian's dataset-fashion-mnist (IDX files, gzipped),
  padded from 28x28 to 32x32, one channel, normalised with the training
  set's mean and std (the values efps-train uses).
- fake: torchvision's FakeData (random images, random labels) for smoke
  runs: the loss does not fall, the pipeline is exercised.
"""
import gzip
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset
import torchvision.datasets as tvd
import torchvision.transforms as T

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def read_idx(path):
    """An IDX file (gzipped or not) as a uint8 numpy array of its shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, file holds {data.size} bytes of data")
    return data.reshape(dims)


class FashionMnist(Dataset):
    """One split of Fashion-MNIST, kept as uint8 and converted per item to a
    normalised 1x32x32 float tensor (zero-padded by 2 pixels each side)."""

    def __init__(self, root, train):
        stem = "train" if train else "t10k"

        def find(kind):
            for name in (f"{stem}-{kind}-ubyte.gz", f"{stem}-{kind}-ubyte"):
                if os.path.exists(os.path.join(root, name)):
                    return os.path.join(root, name)
            raise FileNotFoundError(f"no {stem}-{kind}-ubyte(.gz) in {root} "
                                    "(Debian: apt-get install dataset-fashion-mnist)")

        self.images = torch.from_numpy(read_idx(find("images-idx3")).copy())
        self.labels = torch.from_numpy(read_idx(find("labels-idx1")).astype(np.int64))
        if len(self.images) != len(self.labels):
            raise ValueError(f"{root}: {len(self.images)} {stem} images but {len(self.labels)} labels")

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = (self.images[i].float().div_(255.0) - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
        return F.pad(x, (2, 2, 2, 2)).unsqueeze(0), self.labels[i]


def imagefolder(root, image_size):
    """ImageNet layout: root/train/<class>/*.jpg and root/val/<class>/*.jpg."""
    norm = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    val_tf = T.Compose([T.Resize(int(round(image_size * 256 / 224))), T.CenterCrop(image_size),
                        T.ToTensor(), norm])
    for split in ("train", "val"):
        if not os.path.isdir(os.path.join(root, split)):
            raise FileNotFoundError(f"--data {root}: no {split}/ folder (ImageNet layout: "
                                    f"{root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg)")
    train = tvd.ImageFolder(os.path.join(root, "train"), train_tf)
    test = tvd.ImageFolder(os.path.join(root, "val"), val_tf)
    if test.classes != train.classes:
        raise ValueError(f"--data {root}: val/ has classes {test.classes}, train/ has {train.classes}")
    return train, test, 3, len(train.classes)


def subset(ds, n):
    """The first n items of ds (all of it when n is 0 or larger)."""
    return ds if not n or n >= len(ds) else Subset(ds, range(n))


def load(args):
    """(train, test, channels, classes) for args.dataset."""
    if args.dataset == "imagefolder":
        if not args.data:
            raise ValueError("--dataset imagefolder needs --data DIR")
        train, test, ch, classes = imagefolder(args.data, args.image_size or 224)
    elif args.dataset == "fashion-mnist":
        root = args.data or FASHION_MNIST_DIR
        train, test, ch, classes = FashionMnist(root, True), FashionMnist(root, False), 1, 10
    elif args.dataset == "fake":
        size = args.image_size or 32
        tf = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        train = tvd.FakeData(args.fake_size, (3, size, size), 10, tf, random_offset=args.seed)
        test = tvd.FakeData(max(args.fake_size // 4, 1), (3, size, size), 10, tf,
                            random_offset=args.seed + 1_000_003)
        ch, classes = 3, 10
    else:
        raise ValueError(f"unknown dataset {args.dataset!r}")
    return subset(train, args.train_subset), subset(test, args.test_subset), ch, classes
