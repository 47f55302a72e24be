using System.Text.Json;
using System.Text.Json.Serialization;

namespace SensMerging.Host.Plugins;

/// <summary>
/// <c>plugins.json</c>: the plugins the host loads. <see cref="Plugins"/> lists plugins by folder (or main assembly);
/// every sub-folder of a <see cref="SearchPaths"/> entry that holds a plugin.json is discovered as well, so a plugin
/// can be installed by dropping its folder there. Relative paths are relative to the file's folder.
/// </summary>
public sealed record PluginsFile
{
    [JsonPropertyName("plugins")]
    public IReadOnlyList<PluginEntry> Plugins { get; init; } = [];

    [JsonPropertyName("searchPaths")]
    public IReadOnlyList<string> SearchPaths { get; init; } = [];

    private static readonly JsonSerializerOptions ReadOptions = new() { AllowTrailingCommas = true, ReadCommentHandling = JsonCommentHandling.Skip };

    public static PluginsFile Read(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<PluginsFile>(File.ReadAllText(path), ReadOptions)
                ?? throw new InvalidDataException($"{path} is empty");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path} is not a valid plugins file: {ex.Message}", ex);
        }
    }
}

/// <summary>One plugin in plugins.json.</summary>
public sealed record PluginEntry
{
    /// <summary>The id the plugin must declare in its manifest (optional: the manifest's id is used when absent).</summary>
    [JsonPropertyName("id")]
    public string? Id { get; init; }

    /// <summary>The plugin folder, or its main assembly.</summary>
    [JsonPropertyName("path")]
    public string Path { get; init; } = string.Empty;

    [JsonPropertyName("enabled")]
    public bool Enabled { get; init; } = true;

    /// <summary>Free-form settings handed to the plugin's configurator.</summary>
    [JsonPropertyName("settings")]
    public IReadOnlyDictionary<string, string> Settings { get; init; } = new Dictionary<string, string>();
}
