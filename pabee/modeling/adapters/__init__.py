"""One module per backbone: how it embeds, what its layers read, runs layer i and feeds a head,
on top of `pabee.modeling.model.PabeeMixin`, calling transformers' own modules."""
