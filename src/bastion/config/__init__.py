from .loader import load_config, parse_config
from .model import BastionConfig, DeploymentConfig, ModelConfig, ProviderConfig

__all__ = ["BastionConfig", "DeploymentConfig", "ModelConfig", "ProviderConfig", "load_config", "parse_config"]
