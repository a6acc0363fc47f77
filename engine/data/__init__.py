"""Data in: labelled data sets and archives (CIFAR-10 and class folders), image decoding that
refuses hostile files, and downloads."""
