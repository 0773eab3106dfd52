"""The package version, in one place every layer may import."""

#: 0.3.0.dev0: `.keras` files store each wrapped kernel once (0.2.0 cannot read them; this
#: version reads 0.2.0's files).
__version__ = "0.3.0.dev0"
