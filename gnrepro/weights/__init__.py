"""Released ImageNet weights for this project's ResNets: the catalogue (``catalog``), where files
come from (``fetch``), their formats and conversion (``formats``) and loading (``load``)."""
