"""Models: the network, head layouts with their 18-class decoding, pretrained starts, the dlib face extractor."""
