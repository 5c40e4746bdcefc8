"""Components of the Pulumi program that deploys the clothing classifier to EKS."""
