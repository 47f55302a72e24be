namespace SensMerging.Abstractions;

/// <summary>
/// The version of the plugin contract this assembly defines. A plugin declares the contract version it was
/// built for in its manifest, and its reference to this assembly carries the same major.minor as assembly
/// version; the host accepts a plugin when the major versions are equal and the plugin's minor is not newer.
/// </summary>
public static class PluginContract
{
    /// <summary>Breaking changes bump the major version.</summary>
    public const int Major = 1;

    /// <summary>Additive changes bump the minor version (1.1: <see cref="IStreamingMergeStrategy"/> and <see cref="MergeTensorRequest.ElementStart"/>;
    /// 1.2: <see cref="StrategyTraits.AcceptsBFloat16"/> and <see cref="BFloat16Bits"/>; 1.3: <see cref="StrategyTraits.RoundsIntermediates"/>, <see cref="StrategyTraits.WritesFloat32"/>
    /// and <see cref="MergeTensorRequest.ComputeDType"/>; 1.4: <see cref="ILayerwiseGradients"/>;
    /// 1.5: <see cref="MergeTensorRequest.ModelLayerGroups"/> and <see cref="MergeTensorInfo.ModelLayerGroups"/>, <see cref="ModelLoadOptions.MaxMemoryBytes"/>,
    /// <see cref="ScoringContext.MaxMemoryBytes"/>, <see cref="DecoratorContext.MaxMemoryBytes"/> and the several-sample <see cref="ILayerwiseGradients"/> pass;
    /// 1.6: <see cref="ParameterSpec.PerLayerGroup"/>, <see cref="DecoratorContext.LayerGroupParameters"/> and <see cref="DecoratorContext.ParametersOf"/>,
    /// <see cref="StrategyTraits.StreamsBFloat16Rounding"/> and <see cref="MergeTensorInfo.ComputeDType"/>).</summary>
    public const int Minor = 6;

    /// <summary>The contract version as written in manifests, "major.minor".</summary>
    public const string Version = "1.6";

    /// <summary>The manifest every plugin folder carries beside its main assembly.</summary>
    public const string ManifestFileName = "plugin.json";
}
