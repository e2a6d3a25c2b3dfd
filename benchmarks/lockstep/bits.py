"""Do batched CPU kernels give each member the same bits as one-at-a-time kernels?

Compares, for the shapes of the default fusion network (batch 64 / pool 2000 rows, widths
16..128), F.linear (addmm) against torch.baddbmm on stacked weights held transposed, (K, din,
dout) as ``network.StackedFusion`` holds them, forward and backward,
and baddbmm at K = 1 against baddbmm at K = 7 and 64, with 1 and 2 torch threads.
Prints one line per comparison: ``same`` or the largest difference.

    python benchmarks/lockstep/bits.py
"""

import torch
import torch.nn.functional as F


def diff(a, b):
    return "same" if torch.equal(a, b) else f"DIFF max {float((a - b).abs().max()):.3g}"


def check(threads):
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    out = []
    # the last three: a tiny product and matrix-vector products (where bmm leaves BLAS)
    for B, din, dout in [(64, 16, 64), (64, 64, 64), (64, 128, 64), (64, 64, 3), (36, 20, 64), (2000, 64, 64),
                         (2000, 16, 64), (2, 16, 3), (128, 16, 1), (64, 64, 1)]:
        K = 64
        x = torch.randn(K, B, din, generator=g)
        W = torch.randn(K, dout, din, generator=g) * 0.1
        b = torch.randn(K, dout, generator=g)
        gy = torch.randn(K, B, dout, generator=g)
        # forward
        WT = W.transpose(1, 2).contiguous()  # how StackedFusion holds the weights: (K, din, dout)
        one = torch.stack([F.linear(x[k], W[k], b[k]) for k in range(K)])
        bat = torch.baddbmm(b.unsqueeze(1), x, WT)
        bat1 = torch.stack([torch.baddbmm(b[k:k + 1].unsqueeze(1), x[k:k + 1], WT[k:k + 1])[0] for k in range(K)])
        bat7 = torch.cat([torch.baddbmm(b[s:s + 7].unsqueeze(1), x[s:s + 7], WT[s:s + 7]) for s in range(0, K, 7)])
        # backward pieces: dW^T = x^T gy (what F.linear's backward computes), db = sum_B gy, dx = gy W
        dW_one = torch.stack([x[k].t().mm(gy[k]) for k in range(K)])
        dW_bat = torch.bmm(x.transpose(1, 2), gy)
        dW_bat1 = torch.stack([torch.bmm(x[k:k + 1].transpose(1, 2), gy[k:k + 1])[0] for k in range(K)])
        db_one = torch.stack([gy[k].sum(0) for k in range(K)])
        db_bat = gy.sum(1)
        db_bat1 = torch.stack([gy[k:k + 1].sum(1)[0] for k in range(K)])
        dx_one = torch.stack([gy[k].mm(W[k]) for k in range(K)])
        dx_bat = torch.bmm(gy, WT.transpose(1, 2))
        dx_bat1 = torch.stack([torch.bmm(gy[k:k + 1], WT[k:k + 1].transpose(1, 2))[0] for k in range(K)])
        # autograd through F.linear vs baddbmm
        Wa = W.clone().requires_grad_()
        (torch.stack([F.linear(x[k], Wa[k], b[k]) for k in range(K)]) * gy).sum().backward()
        Wb = WT.clone().requires_grad_()
        (torch.baddbmm(b.unsqueeze(1), x, Wb) * gy).sum().backward()
        Wc = WT.clone().requires_grad_()
        for k in range(K):
            (torch.baddbmm(b[k:k + 1].unsqueeze(1), x[k:k + 1], Wc[k:k + 1]) * gy[k:k + 1]).sum().backward()
        shape = f"threads={threads} B={B} {din}->{dout}"
        out.append(f"{shape}: fwd linear vs bmm(K=64) {diff(one, bat)}; bmm K=1 vs 64 {diff(bat1, bat)}; K=7 vs 64 {diff(bat7, bat)}")
        out.append(f"{shape}: dW mm vs bmm {diff(dW_one, dW_bat)}; K=1 vs 64 {diff(dW_bat1, dW_bat)}; db {diff(db_one, db_bat)}; db K=1 vs 64 {diff(db_bat1, db_bat)}; dx {diff(dx_one, dx_bat)}; dx K=1 vs 64 {diff(dx_bat1, dx_bat)}")
        out.append(f"{shape}: autograd dW linear vs bmm {diff(Wa.grad, Wb.grad.transpose(1, 2))}; bmm K=1 vs 64 {diff(Wc.grad, Wb.grad)}")
    return out


if __name__ == "__main__":
    for t in (1, 2):
        print("\n".join(check(t)))
