"""Models: the network, head layouts with their 18-class decoding, pretrained starts, frozen face extractors."""
