"""Reference answers to notebooks/00_environment.ipynb's exercises (kept out of the notebook students see)."""

ANSWERS = {
    "driver_support": '''
def support(driver: str, cuda: str) -> str:
    """'native', 'compatible' or 'too old' for a driver version and a torch build's CUDA version."""
    native, compatible = driver_requirement(cuda)
    if version_tuple(driver) >= version_tuple(native):
        return "native"
    if compatible and version_tuple(driver) >= version_tuple(compatible):
        return "compatible"
    return "too old"
''',
    "tflops_from_timing": """
n = 512
a, b = torch.randn(n, n), torch.randn(n, n)
a @ b                                  # warm-up
start = time.perf_counter()
a @ b
seconds = time.perf_counter() - start

flops = 2 * n**3
tflops = flops / seconds / 1e12
""",
}
