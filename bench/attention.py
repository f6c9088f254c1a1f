"""AttentionMix's attention and mix weights (method.md §6: sum of squared final features, nearest
upsampling, per-sample min-max, mask at t_m), shared by the bench scripts that measure them."""
import torch.nn.functional as F


def attention(features, size):
    """Per-sample attention maps, [N, size·size], min-max normalised to [0, 1]."""
    a = (features ** 2).sum(1, keepdim=True)
    a = F.interpolate(a, size=(size, size), mode='nearest').flatten(1)
    low, high = a.min(1, keepdim=True)[0], a.max(1, keepdim=True)[0]
    return (a - low) / (high - low + 1e-12)


def mix_weights(a, partner, t_m):
    """Mask coverage, w1 and the partner's label share w1·λ3 per sample, for partners `partner`."""
    mask = (a >= t_m).float()
    w1 = (mask * a).sum(1) / a.sum(1)
    w2 = (mask * a[partner]).sum(1) / a[partner].sum(1)
    return mask.mean(1), w1, w1 * w2 / (w1 + w2)
