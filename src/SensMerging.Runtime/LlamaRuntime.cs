using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Runtime.Model;

namespace SensMerging.Runtime;

/// <summary>
/// Loads Hugging Face model folders of the supported architectures (<see cref="LlamaConfig.SupportedModelTypes"/>): whole,
/// as <see cref="LlamaModel"/>s, or, when <see cref="ModelLoadOptions.MaxMemoryBytes"/> is smaller than the model needs
/// loaded whole (<see cref="StreamingPlan.InMemoryBytes"/>), streamed from its files block by block as
/// <see cref="StreamedLlamaModel"/>s.
/// </summary>
public sealed class LlamaRuntime : IModelRuntime
{
    /// <summary>Tokens per sample the in-memory estimate allows for (the scorers' default max_length).</summary>
    private const int PlannedTokens = 256;

    private readonly ILogger<LlamaRuntime> _logger;

    public LlamaRuntime(ILogger<LlamaRuntime>? logger = null)
    {
        _logger = logger ?? NullLogger<LlamaRuntime>.Instance;
    }

    public ICausalLanguageModel Load(string modelPath, ModelLoadOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(modelPath);
        ArgumentNullException.ThrowIfNull(options);
        if (options.MaxMemoryBytes is { } budget)
        {
            if (budget <= 0)
            {
                throw new ArgumentOutOfRangeException(nameof(options), budget, "The memory budget must be positive.");
            }
            if (!Directory.Exists(modelPath))
            {
                throw new DirectoryNotFoundException($"Model folder not found: {modelPath}");
            }
            var config = LlamaConfig.Load(Path.Combine(modelPath, "config.json"));
            var plan = new StreamingPlan(config, options.Dtype == TorchSharp.torch.ScalarType.Float64 ? 8 : options.Dtype == TorchSharp.torch.ScalarType.Float32 ? 4 : 2);
            if (plan.InMemoryBytes(options.RequiresGrad, PlannedTokens) > budget)
            {
                return StreamedLlamaModel.Open(modelPath, options, budget, cancellationToken, _logger);
            }
        }
        return LoadLlama(modelPath, options, cancellationToken);
    }

    /// <summary>The whole model in memory, typed (the memory budget is not consulted).</summary>
    public LlamaModel LoadLlama(string modelPath, ModelLoadOptions options, CancellationToken cancellationToken) =>
        LlamaModel.Load(modelPath, options, cancellationToken, _logger);

    /// <summary>The model streamed from its files under <paramref name="budgetBytes"/>, whatever its size (tests, benchmarks).</summary>
    public StreamedLlamaModel OpenStreamed(string modelPath, ModelLoadOptions options, long budgetBytes, CancellationToken cancellationToken) =>
        StreamedLlamaModel.Open(modelPath, options, budgetBytes, cancellationToken, _logger);
}
