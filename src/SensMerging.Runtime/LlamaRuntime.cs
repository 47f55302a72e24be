using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Runtime.Model;

namespace SensMerging.Runtime;

/// <summary>Loads Hugging Face model folders of the supported architectures (<see cref="LlamaConfig.SupportedModelTypes"/>) as <see cref="LlamaModel"/>s.</summary>
public sealed class LlamaRuntime : IModelRuntime
{
    private readonly ILogger<LlamaRuntime> _logger;

    public LlamaRuntime(ILogger<LlamaRuntime>? logger = null)
    {
        _logger = logger ?? NullLogger<LlamaRuntime>.Instance;
    }

    public ICausalLanguageModel Load(string modelPath, ModelLoadOptions options, CancellationToken cancellationToken) =>
        LoadLlama(modelPath, options, cancellationToken);

    /// <summary>Same as <see cref="Load"/>, typed.</summary>
    public LlamaModel LoadLlama(string modelPath, ModelLoadOptions options, CancellationToken cancellationToken) =>
        LlamaModel.Load(modelPath, options, cancellationToken, _logger);
}
