"""What runs on every host: the node agent, the supervisor of that host's workers, their process trees and output,
and the JSON-lines protocol the agent speaks with the launcher. No torch."""
