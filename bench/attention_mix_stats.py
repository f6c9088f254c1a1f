"""AttentionMix statistics (method.md §6, nearest upsampling, t_m 0.1, train-mode features) of the
model of a vab run directory on eight random batches of 128 of its bundle's
training images: mask coverage, w1, and the share of the partner's label in the mixed target.
An independent PyTorch reading of the mix, beside the `mix_partner_share` that V&B runs log.

    python3 bench/attention_mix_stats.py RUN_DIR
"""
import sys, json, numpy as np, torch
sys.path.insert(0, __import__('os').path.join(__import__('os').path.dirname(__file__), '..', 'python'))
from vab_models import load, normalise
from attention import attention, mix_weights
from safetensors.numpy import load_file
torch.set_num_threads(1)
torch.manual_seed(0)
run = sys.argv[1]
t = load_file(json.load(open(run + '/run.json'))['bundle'])
model, card = load(run + '/model.safetensors'); model.train()
rng = np.random.default_rng(0)
cov, w1s, partner = [], [], []
for b in range(8):
    idx = rng.choice(len(t['train.images']), 128, replace=False)
    x = normalise(t['train.images'][idx], card)
    with torch.no_grad():
        a = attention(model.features(x), 32)
    coverage, w1, share = mix_weights(a, torch.randperm(128), 0.1)
    cov += coverage.tolist(); w1s += w1.tolist(); partner += share.tolist()
q = lambda v: 'median %.2f (10%%: %.2f, 90%%: %.2f)' % (np.median(v), np.quantile(v, .1), np.quantile(v, .9))
print(run); print(' mask coverage', q(cov)); print(' w1', q(w1s)); print(" partner's label share w1*l3", q(partner))
