"""Networks of the paper's experiments (ResNet-50/101 of Sec. 4.1, VGG-16 of Sec. 4.1's Fig. 6) built
from a norm factory and a conv factory; ``build`` turns a composed config into a model."""
