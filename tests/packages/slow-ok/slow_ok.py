VALUE = "slow but fine"
