"""pdd.training — PyTorch: data sets, 1D U-Net, v-diffusion training, progressive distillation, evaluation."""
