"""Client side of fedglobal: RegionalClient and the Flower ClientApp."""
