"""What operators read: the read model, trace timeline, metrics and console pages. Pure where it can be."""
