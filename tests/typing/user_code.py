"""What users write; mypy --strict must accept it (tests/test_typing.py)."""
import numpy as np
import softmax_ext as sx

z = np.zeros((4, 3))
y = np.array([0, 1, 2, 0])
x = np.zeros((4, 5))
W = np.zeros((3, 5))
b = np.zeros(3)
print(float(sx.cross_entropy(z, y)))
loss, dz = sx.cross_entropy(z, y, return_grad=True)
print(dz.shape, float(loss))
per_row = sx.cross_entropy(z, y, reduction="none")
print(per_row.shape)
loss2, (dx, dW, db) = sx.linear_cross_entropy(x, W, y, b)
print(float(loss2), dx.shape, dW.shape)
lse, sign = sx.logsumexp(z, b=z, return_sign=True)
p = sx.softmax(z, axis=(0, 1))
print(p.shape)
