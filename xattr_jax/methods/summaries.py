"""One line per method: what it propagates and where it comes from (``xa.methods_available(describe=True)``)."""

SUMMARIES = {
    "attention_backprop": "Attention Backpropagation (Dong et al. 2021; our interpretation): a conserving "
    "attention map at every layer, seeded by Grad-CAM",
    "cam": "CAM (Zhou et al., CVPR 2016): the class's classifier weights over the last feature maps",
    "contrastive_excitation_backprop": "contrastive Excitation Backprop (Zhang et al., IJCV 2018): "
    "the class's winning probabilities minus those of its dual",
    "deconvnet": "deconvnet (Zeiler & Fergus, ECCV 2014): ReLU backward passes positive signal only",
    "excitation_backprop": "Excitation Backprop (Zhang et al., IJCV 2018): top-down winning "
    "probabilities through non-negative weights",
    "gnl_gradient": "gradient with guided non-linearity (Kwon et al., ICPR 2020): guided ReLU "
    "backward, gated max-pool routing",
    "gnl_integrated_gradients": "integrated gradients with guided non-linearity (Kwon et al., ICPR "
    "2020): the path integral of the GNL gradient",
    "grad_cam": "Grad-CAM (Selvaraju et al., ICCV 2017): ReLU of the feature maps weighted by their "
    "mean gradient",
    "gradient": "saliency (Simonyan et al., 2014): max over channels of |dS/dx|",
    "guided_backprop": "guided backprop (Springenberg et al., 2015): ReLU backward keeps positive "
    "signal at positive inputs",
    "input_x_gradient": "gradient x input (Shrikumar et al., 2016): x times dS/dx, summed over channels",
    "integrated_gradients": "integrated gradients (Sundararajan et al., ICML 2017): (x - x0) times the "
    "mean gradient along the straight path",
    "lrp": "layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019): a composite of "
    "epsilon, z+, alpha-beta, gamma, zB, flat rules",
    "rsp": "Relative Sectional Propagation (Nam et al., AAAI 2021): bipolar relevance, target minus "
    "hostile classes, relevance-weighted kernels",
    "smoothgrad": "SmoothGrad (Smilkov et al., 2017): the gradient averaged over noisy copies of x",
}
