"""PyTorch reference for benchmarks/throughput.py: the same SimCLR step, timed the same way.

On one GPU, with the same per-device batch, run

  python benchmarks/throughput.py --config=configs/simclr_resnet50.py \
      --config.model.dtype=bfloat16 --config.batch_size=256 --steps=20 --warmup=3
  python benchmarks/pytorch_reference.py --device=cuda --dtype=bf16 --batch=256 --size=224 \
      --channels=1 --source-size=28 --steps=20 --warmup=5

and compare this script's images/s with throughput.py's "data on device" line. throughput.py
uses the recipe's data set, PneumoniaMNIST unless --config.data.name says otherwise: 28 px,
one channel, hence --channels=1 --source-size=28 (a 224 px RGB set: --channels=3
--source-size=224). torch (and torchvision, if it imports) is not a dependency of this
package: install it in a separate environment.

One step here, as in medssl_jax/loop/pretrain.py + methods/simclr.py + configs/simclr_resnet50.py:
  - B uint8 images already on the device, the same batch every step (no host pipeline);
  - two views per image made on the device (--augment, below), in float32;
  - ResNet-50 in torchvision's layout (fc removed, last BN of each block zero-initialised as
    ours), then the projector Linear(2048, 2048, no bias) - BatchNorm - ReLU -
    Linear(2048, 128); both views run as one batch of 2B, so BatchNorm sees 2B images;
  - forward and backward under torch.autocast(bfloat16) with float32 parameters
    (--dtype=bf16), or float32 with TF32 allowed, which is JAX's default on GPUs (--dtype=fp32);
    channels_last memory format; torch.compile of augmentation + forward + loss (--no-compile
    to turn it off; its compilation falls in the warm-up steps);
  - NT-Xent over the 2B normalised projections in float32, temperature 0.1, the diagonal
    masked, as methods/simclr.py;
  - LARS written here (torch has none), as optax.lars in the recipe: weight decay 1e-6 and the
    trust ratio 0.001 * |w| / |g| on weights (ndim > 1) only, then the learning rate, then
    momentum 0.9. The learning rate is constant at its peak 0.3 * B / 256: the warmup-cosine
    schedule costs nothing worth timing.
images/s counts images (positive pairs), B per step, as throughput.py does; each image is
two views through the network.

--augment=simclr (default) approximates the recipe's "simclr" policy on the device:
random resized crop (area 8-100 %, aspect ratio 3/4-4/3, ONE draw clamped to the image
instead of torchvision's ten tries) and a horizontal flip with p = 0.5, applied as one
bilinear resampling to --size (affine_grid + grid_sample, like our single resampling);
brightness and contrast factors in [0.6, 1.4] with p = 0.8; Gaussian blur with sigma in
[0.1, 2.0] and a kernel of 10 % of the side, with p = 0.5 (computed for every image and
selected, as the JAX version does). --augment=crop_flip keeps only the crop and flip;
--augment=none only resizes.
Not included: host data loading and host-to-device copies; the JAX step's extra metrics
(contrastive accuracy, embedding std, gradient norm); more than one device (--batch is the
per-device batch; DistributedDataParallel and a cross-device gather of negatives are not
modelled), so "per device" equals the total here.
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

import torchvision_resnet  # beside this script

# Grey mean of RGB images for the contrast blend (ITU-R 601 luma, as augment.py).
_LUMA = (0.299, 0.587, 0.114)
# Large finite value rather than -inf for the masked diagonal, as methods/simclr.py.
_MASK_VALUE = -1e9


# --- ResNet-50 ------------------------------------------------------------------------------

def create_resnet50():
  """Returns (model, where it came from): torchvision's ResNet-50, or its module-for-module
  replica where torchvision does not import; each block's last BN zero-initialised, as ours."""
  model, source = torchvision_resnet.create("resnet50")
  for module in model.modules():
    if hasattr(module, "bn3"):  # a bottleneck block
      nn.init.zeros_(module.bn3.weight)
  return model, source



class SimCLRNet(nn.Module):
  """Backbone (pooled 2048 features) followed by the 2-layer projector of heads.MLPHead."""

  def __init__(self, backbone, channels, hidden_dim, out_dim):
    super().__init__()
    if channels != 3:
      # Grey inputs: the stem takes `channels` planes, as the Flax stem infers from its input.
      backbone.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
      nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
    feature_dim = backbone.fc.in_features
    backbone.fc = nn.Identity()
    self.backbone = backbone
    # Flax BatchNorm momentum 0.9 is torch's momentum 0.1 (the default).
    self.projector = nn.Sequential(nn.Linear(feature_dim, hidden_dim, bias=False),
                                   nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                                   nn.Linear(hidden_dim, out_dim))

  def forward(self, x):
    return self.projector(self.backbone(x))


# --- loss and optimizer ---------------------------------------------------------------------

def nt_xent(z1, z2, temperature):
  n = z1.shape[0]
  z = F.normalize(torch.cat([z1, z2]).float(), dim=-1, eps=1e-6)
  logits = z @ z.T / temperature
  logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), _MASK_VALUE)
  positives = torch.cat([torch.arange(n, 2 * n, device=z.device), torch.arange(n, device=z.device)])
  return F.cross_entropy(logits, positives)


class LARS(torch.optim.Optimizer):
  """optax.lars(weight_decay_mask = trust_ratio_mask = ndim > 1), with torch foreach kernels.

  For weights: g += wd * w, then g *= trust * |w| / |g| (1 where either norm is 0); biases and
  norm parameters skip both. Then m = momentum * m + lr * g and w -= m (optax's trace of the
  already lr-scaled update).
  """

  def __init__(self, params, lr, momentum=0.9, weight_decay=1e-6, trust_coefficient=1e-3):
    super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                  trust_coefficient=trust_coefficient))

  @torch.no_grad()
  def step(self, closure=None):  # pylint: disable=arguments-differ,protected-access
    del closure
    for group in self.param_groups:
      params = [p for p in group["params"] if p.grad is not None]
      grads = [p.grad for p in params]
      weights = [p for p in params if p.ndim > 1]
      weight_grads = [p.grad for p in weights]
      if weights:
        if group["weight_decay"]:
          torch._foreach_add_(weight_grads, weights, alpha=group["weight_decay"])
        w_norm = torch.stack(torch._foreach_norm(weights))
        g_norm = torch.stack(torch._foreach_norm(weight_grads))
        ratio = torch.where((w_norm > 0) & (g_norm > 0),
                            group["trust_coefficient"] * w_norm / g_norm, torch.ones_like(w_norm))
        torch._foreach_mul_(weight_grads, list(ratio.unbind(0)))
      buffers = []
      for p in params:
        state = self.state[p]
        if "momentum" not in state:
          state["momentum"] = torch.zeros_like(p)
        buffers.append(state["momentum"])
      torch._foreach_mul_(buffers, group["momentum"])
      torch._foreach_add_(buffers, grads, alpha=group["lr"])
      torch._foreach_sub_(params, buffers)


# --- augmentation on the device -------------------------------------------------------------

def blur_kernel_size(side, fraction=0.1):
  size = int(round(fraction * side))
  return max(3, size + 1 - size % 2)


def _crop_flip_grid(n, size, channels, device, crop, flip):
  """Sampling grid of a random resized crop + flip per example, for grid_sample."""
  u = torch.rand(n, 5, device=device)
  if crop:
    area = 0.08 + (1.0 - 0.08) * u[:, 0]
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[:, 1]
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # fractions of the (square) source side
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1.0 - w) * (2 * u[:, 2] - 1)  # centre in [-1, 1] coordinates, crop inside the image
    cy = (1.0 - h) * (2 * u[:, 3] - 1)
  else:
    w = h = torch.ones(n, device=device)
    cx = cy = torch.zeros(n, device=device)
  sign = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=device)
  zero = torch.zeros(n, device=device)
  theta = torch.stack([torch.stack([sign * w, zero, cx], -1),
                       torch.stack([zero, h, cy], -1)], 1)
  return F.affine_grid(theta, [n, channels, size, size], align_corners=False)


def _brightness_contrast(x, p=0.8, brightness=0.4, contrast=0.4):
  n = x.shape[0]
  u = torch.rand(n, 3, 1, 1, 1, device=x.device)
  b = 1 - brightness + 2 * brightness * u[:, 1]
  c = 1 - contrast + 2 * contrast * u[:, 2]
  out = (x * b).clamp(0, 1)
  if x.shape[1] == 3:
    luma = torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)
    mean = (out * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
  else:
    mean = out.mean((1, 2, 3), keepdim=True)
  out = (c * out + (1 - c) * mean).clamp(0, 1)
  return torch.where(u[:, 0] < p, out, x)


def _gaussian_blur(x, p=0.5, sigma=(0.1, 2.0)):
  """Separable blur, one sigma per example, as grouped 1-D convolutions with reflect padding."""
  n, c, height, width = x.shape
  k = blur_kernel_size(height)
  u = torch.rand(n, 2, device=x.device)
  s = sigma[0] + (sigma[1] - sigma[0]) * u[:, 1:]
  taps = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
  kernel = torch.exp(-0.5 * (taps / s) ** 2)
  kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n * c, k)
  y = x.reshape(1, n * c, height, width)
  y = F.conv2d(F.pad(y, (k // 2, k // 2, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, k),
               groups=n * c)
  y = F.conv2d(F.pad(y, (0, 0, k // 2, k // 2), mode="reflect"), kernel.view(n * c, 1, k, 1),
               groups=n * c)
  y = y.reshape(n, c, height, width).clamp(0, 1)
  return torch.where((u[:, 0] < p).view(n, 1, 1, 1), y, x)


def two_views(images, size, augment):
  """uint8 (B, C, S, S) -> float32 (2B, C, size, size) in [0, 1]: view 1 then view 2."""
  x = images.float().div(255.0)
  x = torch.cat([x, x])
  n, c = x.shape[:2]
  grid = _crop_flip_grid(n, size, c, x.device, crop=augment != "none", flip=augment != "none")
  views = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
  views = views.clamp(0, 1)
  if augment == "simclr":
    views = _gaussian_blur(_brightness_contrast(views))
  return views


# --- benchmark ------------------------------------------------------------------------------

def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=256, help="images (positive pairs) per step")
  parser.add_argument("--size", type=int, default=224, help="side of the augmented views")
  parser.add_argument("--source-size", type=int, default=None,
                      help="side of the stored uint8 images (default: --size)")
  parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
  parser.add_argument("--steps", type=int, default=20, help="timed steps")
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
  parser.add_argument("--no-compile", action="store_true", help="eager mode, no torch.compile")
  parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                      choices=("cuda", "cpu"))
  parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
  parser.add_argument("--augment", default="simclr", choices=("simclr", "crop_flip", "none"))
  # configs/simclr_resnet50.py: projector 2048 -> 2048 -> 128, temperature 0.1, LARS 0.3.
  parser.add_argument("--projector-hidden-dim", type=int, default=2048)
  parser.add_argument("--projector-dim", type=int, default=128)
  parser.add_argument("--temperature", type=float, default=0.1)
  parser.add_argument("--base-lr", type=float, default=0.3)
  parser.add_argument("--json", default="", help="also write the figures to this JSON file")
  return parser.parse_args()


def main():
  args = parse_args()
  if args.device == "cuda" and not torch.cuda.is_available():
    raise SystemExit("--device=cuda but torch sees no CUDA device; use --device=cpu")
  device = torch.device(args.device)
  torch.manual_seed(0)
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True
    # float32 convolutions and matmuls in TF32, as JAX does by default on GPUs.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
  bf16 = args.dtype == "bf16"

  backbone, backbone_source = create_resnet50()
  model = SimCLRNet(backbone, args.channels, args.projector_hidden_dim, args.projector_dim)
  model = model.to(device, memory_format=torch.channels_last).train()
  optimizer = LARS(model.parameters(), lr=args.base_lr * args.batch / 256)
  source_size = args.source_size or args.size
  images = torch.randint(0, 256, (args.batch, args.channels, source_size, source_size),
                         dtype=torch.uint8, device=device)

  def forward_loss(images):
    views = two_views(images, args.size, args.augment).contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      z = model(views)
    z1, z2 = z.float().chunk(2)
    return nt_xent(z1, z2, args.temperature)

  loss_fn = forward_loss if args.no_compile else torch.compile(forward_loss)

  def run(steps):
    loss = None
    for _ in range(steps):
      optimizer.zero_grad(set_to_none=True)
      loss = loss_fn(images)
      loss.backward()
      optimizer.step()
    if device.type == "cuda":
      torch.cuda.synchronize()
    return loss

  start = time.perf_counter()
  run(args.warmup)
  warmup_s = time.perf_counter() - start
  start = time.perf_counter()
  loss = run(args.steps)
  elapsed = time.perf_counter() - start

  devices = 1
  name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
  images_per_s = args.batch * args.steps / elapsed
  print(f"PyTorch {torch.__version__} reference: simclr resnet50 {args.dtype} "
        f"({'autocast bfloat16, float32 params' if bf16 else 'float32'}), "
        f"{'torch.compile' if not args.no_compile else 'eager'}, channels_last, {args.size} px "
        f"from {source_size} px x {args.channels} ch uint8, batch {args.batch}, {devices} x {name}")
  print(f"  backbone: {backbone_source}")
  print(f"  included: augmentation '{args.augment}' on the device, forward + backward of 2 x "
        f"{args.batch} views, NT-Xent (T={args.temperature}), LARS (written here) update")
  print("  not included: host data loading, metrics, multi-device; constant learning rate")
  print(f"  warm-up: {args.warmup} steps in {warmup_s:.1f} s; timed: {args.steps} steps in "
        f"{elapsed:.2f} s ({1000 * elapsed / args.steps:.1f} ms/step), last loss {loss.item():.4f}")
  print(f"  data on device: {images_per_s:10.1f} images/s  "
        f"({images_per_s / devices:.1f} per device)")
  peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"torch": torch.__version__, "device": name, "dtype": args.dtype,
                 "compiled": not args.no_compile, "batch": args.batch, "size": args.size,
                 "source_size": source_size, "channels": args.channels, "augment": args.augment,
                 "backbone": backbone_source, "steps": args.steps, "warmup_s": warmup_s,
                 "ms_per_step": 1000 * elapsed / args.steps, "images_per_s": images_per_s,
                 "views_per_s": 2 * images_per_s, "peak_memory_bytes": peak,
                 "last_loss": loss.item()}, f, indent=1)


if __name__ == "__main__":
  main()
