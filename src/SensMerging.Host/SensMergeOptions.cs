using System.ComponentModel.DataAnnotations;

namespace SensMerging.Host;

/// <summary>Host settings: section <c>SensMerge</c> of appsettings.json, <c>SENSMERGE_</c> environment variables, or <c>--set</c>.</summary>
public sealed class SensMergeOptions
{
    public const string Section = "SensMerge";

    /// <summary>plugins.json; when relative and absent from the working folder, looked up beside the executable and its parents.</summary>
    [Required]
    public string PluginsFile { get; set; } = "plugins.json";

    /// <summary>The merge registry (LiteDB file).</summary>
    [Required]
    public string RegistryPath { get; set; } = "registry/merges.db";

    /// <summary>Compute device: cpu or cuda.</summary>
    [RegularExpression("^(cpu|cuda)$", ErrorMessage = "Device must be cpu or cuda")]
    public string Device { get; set; } = "cpu";

    /// <summary>
    /// Memory budget for a model the scorers load (for example <c>8GiB</c>, <c>500MB</c>; empty: no limit). A model
    /// that does not fit is streamed from its safetensors files block by block; <c>--max-memory</c> overrides it.
    /// </summary>
    public string? MaxMemory { get; set; }

    /// <summary>libtorch CPU threads (0: libtorch's default). On a busy machine 1 is often fastest for small models.</summary>
    [Range(0, 1024)]
    public int TorchThreads { get; set; }

    /// <summary>Finds a relative path in the working folder, else beside the executable or in one of its parent folders.</summary>
    public static string Locate(string path)
    {
        if (Path.IsPathRooted(path) || File.Exists(path))
        {
            return Path.GetFullPath(path);
        }
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, path);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return Path.GetFullPath(path);
    }
}
