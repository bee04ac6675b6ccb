"""Search over genomes with predictors in the loop. Never imports nasq.supernet: the search sees
genomes, predictors, a cost model and an injected ``evaluate(specs) -> top1`` callable."""
