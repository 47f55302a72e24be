using System.Buffers;
using System.Runtime.InteropServices;
using Microsoft.Extensions.DependencyInjection;
using SensMerging.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace MyStreamingStrategy;

/// <summary>The plugin's one configurator: registers its components as singletons.</summary>
public sealed class Plugin : IPluginConfigurator
{
    /// <inheritdoc />
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, Strategy>();
}

/// <summary>
/// Norm-matched task averaging, a strategy that needs whole-tensor statistics. With task vectors <c>d_i = x_i - base</c>
/// and normalized weights <c>p_i = w_i / sum_j w_j</c> (<c>w</c> = <see cref="MergeTensorRequest.Weights"/>: the configured
/// <c>weight</c> times any decorator's coefficient), the weighted mean task vector <c>m = sum_i p_i d_i</c> is shorter
/// than the task vectors it averages; this strategy gives it their weighted mean length back:
/// <c>out = base + (N / |m|) m</c> with <c>N = sum_i p_i |d_i|</c>, norms over the whole tensor (<c>out = base</c> when
/// <c>m = 0</c>). The norms are statistics of the whole tensor, so the strategy is not elementwise; it implements
/// <see cref="IStreamingMergeStrategy"/> so that the host can still hand it blocks: one statistics pass sums the squares,
/// then the merge pass writes each block.
/// </summary>
public sealed class Strategy : IStreamingMergeStrategy
{
    /// <summary>What a config's <c>merge_method</c> names (not the plugin id).</summary>
    public string Name => "my_component";

    /// <inheritdoc />
    public string Description => "Weighted mean of the task vectors, rescaled to their weighted mean norm (per tensor).";

    /// <inheritdoc />
    public IReadOnlyList<ParameterSpec> Parameters { get; } =
    [
        ParameterSpec.Float("weight", 1.0, ParameterScope.PerModel, "Weight of the model in the mean (weights are normalized).", min: 0),
    ];

    /// <inheritdoc />
    public StrategyTraits Traits { get; } = new(RequiresBaseModel: true, Elementwise: false);

    /// <summary>A whole tensor (a host that does not stream, or a test): the same session over one block.</summary>
    public void Merge(MergeTensorRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        using var session = BeginTensor(new MergeTensorInfo
        {
            TensorName = request.TensorName,
            LayerGroup = request.LayerGroup,
            Shape = request.Output.shape,
            HasBase = request.Base is not null,
            ModelNames = request.ModelNames,
            Weights = request.Weights,
            Parameters = request.Parameters,
            Seed = request.Seed,
        });
        for (var pass = 0; session.BeginPass(pass); pass++)
        {
            session.Observe(request);
        }
        session.Merge(request);
    }

    /// <inheritdoc />
    public ITensorMergeSession BeginTensor(MergeTensorInfo tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (!tensor.HasBase)
        {
            throw new ArgumentException($"{Name} needs a base model (tensor '{tensor.TensorName}')", nameof(tensor));
        }
        var total = tensor.Weights.Sum();
        if (tensor.Weights.Any(w => w < 0) || total <= 0)
        {
            throw new ArgumentException($"{Name}: the weights of tensor '{tensor.TensorName}' must be non-negative with a positive sum, got [{string.Join(", ", tensor.Weights)}]", nameof(tensor));
        }
        return new Session([.. tensor.Weights.Select(w => w / total)]);
    }

    /// <summary>
    /// One tensor's merge. Pass 0 (<see cref="Observe"/>) adds every element's squares to double accumulators, element by
    /// element in the tensor's order, so the sums, and so the output, are the same however the host cuts the tensor into
    /// blocks. <see cref="Merge"/> then writes each block with the scale those sums give.
    /// </summary>
    private sealed class Session(double[] p) : ITensorMergeSession
    {
        private readonly double[] _squares = new double[p.Length]; // sum of d_i^2 per model
        private double _meanSquares; // sum of m^2
        private double? _scale;

        public bool BeginPass(int pass)
        {
            if (pass == 0)
            {
                return true;
            }
            var targetNorm = 0.0;
            for (var i = 0; i < p.Length; i++)
            {
                targetNorm += p[i] * Math.Sqrt(_squares[i]);
            }
            var meanNorm = Math.Sqrt(_meanSquares);
            _scale = meanNorm > 0 ? targetNorm / meanNorm : 1.0;
            return false;
        }

        public void Observe(MergeTensorRequest block)
        {
            // Temporaries made here (CPU float32 copies of GPU blocks) are disposed with the scope; the inputs
            // themselves pass through unchanged and are never disposed (the host owns them).
            using var scope = NewDisposeScope();
            var baseValues = Floats(Cpu(block.Base!));
            var mean = ArrayPool<double>.Shared.Rent(baseValues.Length); // m of each element of the block
            try
            {
                Array.Clear(mean, 0, baseValues.Length);
                for (var i = 0; i < block.Models.Count; i++)
                {
                    var values = Floats(Cpu(block.Models[i]));
                    // Continue the running sum (not a per-block sum added at the end): the same additions in the
                    // same order for every block size, so the bits do not depend on how the host cuts the tensor.
                    var squares = _squares[i];
                    for (var e = 0; e < baseValues.Length; e++)
                    {
                        var d = (double)(values[e] - baseValues[e]);
                        squares += d * d;
                        mean[e] += p[i] * d;
                    }
                    _squares[i] = squares;
                }
                for (var e = 0; e < baseValues.Length; e++)
                {
                    _meanSquares += mean[e] * mean[e];
                }
            }
            finally
            {
                ArrayPool<double>.Shared.Return(mean);
            }
        }

        public void Merge(MergeTensorRequest block)
        {
            var scale = _scale ?? throw new InvalidOperationException("Merge before the statistics pass ended");
            var baseBlock = block.Base!;
            using var noGrad = no_grad();
            // out = base + sum_i (scale * p_i) * (x_i - base), with one rented temporary (owned by the host's scratch).
            var delta = block.Scratch.Rent();
            block.Output.copy_(baseBlock);
            for (var i = 0; i < block.Models.Count; i++)
            {
                delta.copy_(block.Models[i]).sub_(baseBlock);
                block.Output.add_(delta, alpha: scale * p[i]);
            }
        }

        public void Dispose()
        {
        }

        /// <summary>The tensor itself when it is a contiguous CPU float32 tensor, else a copy (owned by the caller's dispose scope).</summary>
        private static Tensor Cpu(Tensor t) =>
            t.device_type == DeviceType.CPU && t.dtype == ScalarType.Float32 && t.is_contiguous() ? t : t.to(DeviceType.CPU).to(ScalarType.Float32).contiguous();

        private static ReadOnlySpan<float> Floats(Tensor cpuFloat32) => MemoryMarshal.Cast<byte, float>(cpuFloat32.bytes);
    }
}
