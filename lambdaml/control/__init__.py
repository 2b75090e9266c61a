"""The control plane: prediction records, the control application, webhooks."""
