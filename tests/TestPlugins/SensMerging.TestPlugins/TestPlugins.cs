using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SensMerging.Abstractions;
using static TorchSharp.torch;

namespace SensMerging.TestPlugins;

/// <summary>
/// Registers <see cref="ScaleStrategy"/>: output = factor * sum_i w_i * model_i (factor from plugin settings; setting
/// <c>delayMs</c> makes each tensor take that long, for tests that need a merge to be running when they act; setting
/// <c>disposedMarker</c> names a file the strategy writes when it is disposed, for tests of the host's shutdown).
/// </summary>
public sealed class ScaleConfigurator : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
        var factor = context.Settings.TryGetValue("factor", out var f) ? double.Parse(f, System.Globalization.CultureInfo.InvariantCulture) : 2.0;
        var delay = context.Settings.TryGetValue("delayMs", out var d) ? TimeSpan.FromMilliseconds(int.Parse(d, System.Globalization.CultureInfo.InvariantCulture)) : TimeSpan.Zero;
        var marker = context.Settings.TryGetValue("disposedMarker", out var m) ? m : null;
        services.AddSingleton<IMergeStrategy>(sp => new ScaleStrategy(factor, sp.GetRequiredService<ILogger<ScaleStrategy>>(), delay) { DisposedMarker = marker });
    }
}

public sealed class ScaleStrategy : IMergeStrategy, IDisposable
{
    private readonly double _factor;
    private readonly TimeSpan _delay;

    public ScaleStrategy(double factor, ILogger<ScaleStrategy> logger, TimeSpan delay = default)
    {
        ArgumentNullException.ThrowIfNull(logger);
        _factor = factor;
        _delay = delay;
    }

    /// <summary>A file to write (one more line each time) when disposed; null: nothing.</summary>
    public string? DisposedMarker { get; init; }

    public string Name => "test_scale";

    public void Dispose()
    {
        if (DisposedMarker is not null)
        {
            File.AppendAllText(DisposedMarker, "disposed\n");
        }
    }

    public string Description => "Test strategy: factor times the weighted sum of the models.";

    public IReadOnlyList<ParameterSpec> Parameters { get; } = [ParameterSpec.Float("weight", 1.0, ParameterScope.PerModel, "Model weight.")];

    public StrategyTraits Traits { get; } = new(RequiresBaseModel: false, Elementwise: true);

    public void Merge(MergeTensorRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (_delay > TimeSpan.Zero)
        {
            Thread.Sleep(_delay);
        }
        using var scope = NewDisposeScope();
        var sum = zeros_like(request.Output);
        for (var i = 0; i < request.Models.Count; i++)
        {
            sum.add_(request.Models[i], alpha: request.Weights[i]);
        }
        request.Output.copy_(sum.mul_(_factor));
    }
}

/// <summary>Throws while configuring.</summary>
public sealed class ThrowingConfigurator : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        throw new InvalidOperationException("configurator failed on purpose");
}

/// <summary>Registers a strategy whose constructor throws.</summary>
public sealed class ThrowingComponentConfigurator : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context) =>
        services.AddSingleton<IMergeStrategy, ThrowingStrategy>();
}

/// <summary>A configurator whose own constructor throws.</summary>
public sealed class ThrowingConstructorConfigurator : IPluginConfigurator
{
    public ThrowingConstructorConfigurator() => throw new InvalidOperationException("constructor failed on purpose");

    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
    }
}

/// <summary>Registers nothing.</summary>
public sealed class EmptyConfigurator : IPluginConfigurator
{
    public void ConfigureServices(IServiceCollection services, PluginContext context)
    {
    }
}

public sealed class ThrowingStrategy : IMergeStrategy
{
    public ThrowingStrategy() => throw new InvalidOperationException("strategy constructor failed on purpose");

    public string Name => "throwing";

    public string Description => "Never constructed.";

    public IReadOnlyList<ParameterSpec> Parameters => [];

    public StrategyTraits Traits => new(false);

    public void Merge(MergeTensorRequest request)
    {
    }
}
