"""The model-design advisor's analysis library.

It checks the common model structure assumption and the data-architecture
alignment condition of Kawaguchi, Zhang and Deng, "Understanding Dynamics of
Nonlinear Representation Learning and Its Application" (Neural Computation
2022), and confirms the verdict with the exploration–exploitation training
framework in the `training` package.
"""

__version__ = "0.1.0"
