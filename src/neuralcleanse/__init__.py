"""neuralcleanse: find and remove backdoors in image classifiers (Neural Cleanse, Wang et al., S&P 2019)."""

__version__ = "0.1.0"
