"""How AttentionMix's mask (method.md §6: sum of squared final features, nearest upsampling,
per-sample min-max, threshold t_m) covers the image as a network trains, for vab's small network
or ResNet-18 (python/vab_models.py's modules). Plain SGD (lr 0.05, momentum 0.9, weight decay
5e-4, cosine over the run, flips; crop with --crop) on a seeded 10,000-image subset of a bundle's
training set. At initialisation and after every epoch it prints one JSON line: the median mask
coverage at t_m 0.1, 0.2 and 0.3 (and the 10th/90th percentiles at 0.1) over 8 fixed batches of
128 training images in train mode, the mean share of the partner's label at 0.1, and the
accuracy on a seeded sample of 2,000 test images.

    python3 bench/attention_coverage_training.py BUNDLE ARCH EPOCHS [--crop]
"""
import copy, json, os, sys, time
import numpy as np, torch, torch.nn.functional as F
from safetensors.numpy import load_file
sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'python'))
from vab_models import build
from attention import attention, mix_weights

bundle, arch, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
crop = '--crop' in sys.argv[4:]
torch.set_num_threads(2); torch.manual_seed(0)
t = load_file(bundle)
rng = np.random.default_rng(0)
subset = rng.choice(len(t['train.labels']), 10000, replace=False)
test = rng.choice(len(t['test.labels']), 2000, replace=False)
mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
std = torch.tensor([0.247, 0.243, 0.261]).view(1, 3, 1, 1)
to_input = lambda u8: (torch.tensor(u8).float() / 255 - mean) / std
X, Y = to_input(t['train.images'][subset]), torch.tensor(t['train.labels'][subset]).long()
Xt, Yt = to_input(t['test.images'][test]), torch.tensor(t['test.labels'][test]).long()
model = build(arch)


probe = [torch.tensor(np.random.default_rng(100 + b).choice(10000, 128, replace=False)) for b in range(8)]


def measure(epoch, start):
    m = copy.deepcopy(model).train()  # train-mode features, as the authors' code; the copy keeps the statistics
    coverage, share = {0.1: [], 0.2: [], 0.3: []}, []
    perms = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for idx in probe:
            a = attention(m.features(X[idx]), 32)
            for t_m in coverage:
                coverage[t_m] += mix_weights(a, torch.arange(128), t_m)[0].tolist()
            share += mix_weights(a, torch.randperm(128, generator=perms), 0.1)[2].tolist()
        model.eval()
        accuracy = (model(Xt).argmax(1) == Yt).float().mean().item() * 100
        model.train()
    print(json.dumps({
        'arch': arch, 'epoch': epoch, 'test_accuracy_2k': round(accuracy, 2),
        **{f'coverage_{t_m}': round(float(np.median(v)), 3) for t_m, v in coverage.items()},
        'coverage_0.1_p10_p90': [round(float(np.quantile(coverage[0.1], q)), 3) for q in (0.1, 0.9)],
        'partner_share': round(float(np.mean(share)), 3), 'seconds': round(time.time() - start)}), flush=True)


start = time.time()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
steps_per_epoch = len(X) // 128
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
measure(0, start)
for epoch in range(1, epochs + 1):
    model.train()
    order = torch.randperm(len(X))
    for s in range(steps_per_epoch):
        idx = order[s * 128:(s + 1) * 128]
        x, y = X[idx].clone(), Y[idx]
        flip = torch.rand(len(idx)) < 0.5
        x[flip] = x[flip].flip(3)
        if crop:
            dy, dx = np.random.randint(0, 9, 2)
            x = F.pad(x, (4, 4, 4, 4))[:, :, dy:dy + 32, dx:dx + 32]
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step(); schedule.step()
    measure(epoch, start)
