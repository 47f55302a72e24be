using System.Text.Json;
using SensMerging.Zoo.Training;

namespace SensMerging.Zoo;

/// <summary>One trained model of the zoo.</summary>
/// <param name="Name"><c>base</c> or the task name of the expert.</param>
/// <param name="Repo">Hub repository id (<c>zoo/base</c>, <c>zoo/math</c>, ...).</param>
/// <param name="Path">The model folder, relative to the zoo root.</param>
/// <param name="Task">The expert's task, or null for the base.</param>
/// <param name="BaseModel">The repository the expert was fine-tuned from, or null.</param>
/// <param name="Training">Steps, losses and seconds.</param>
public sealed record ZooModelEntry(string Name, string Repo, string Path, string? Task, string? BaseModel, TrainingReport Training);

/// <summary>The data files of one task.</summary>
/// <param name="Name">The task.</param>
/// <param name="TrainSamples">Samples in the expert's training pool.</param>
/// <param name="BaseTrainSamples">Of those, the samples the base model was trained on.</param>
/// <param name="EvalSamples">Held-out evaluation samples.</param>
/// <param name="CalibrationSamples">Calibration samples.</param>
/// <param name="DevSamples">Development samples (for choosing settings).</param>
/// <param name="TrainPath">train.jsonl, relative to the zoo root.</param>
/// <param name="EvalPath">eval.jsonl, relative to the zoo root.</param>
/// <param name="CalibrationPath">calibration.jsonl, relative to the zoo root.</param>
/// <param name="DevPath">dev.jsonl, relative to the zoo root.</param>
public sealed record ZooTaskEntry(
    string Name,
    int TrainSamples,
    int BaseTrainSamples,
    int EvalSamples,
    int CalibrationSamples,
    int DevSamples,
    string TrainPath,
    string EvalPath,
    string CalibrationPath,
    string DevPath);

/// <summary>zoo.json: what was built, from which seed and settings, and how training went.</summary>
public sealed record ZooManifest(
    int FormatVersion,
    int Seed,
    string Size,
    ZooSettings Settings,
    IReadOnlyList<ZooModelEntry> Models,
    IReadOnlyList<ZooTaskEntry> Tasks,
    double TotalSeconds,
    DateTimeOffset CreatedUtc)
{
    public const int CurrentFormatVersion = 2;

    public const string FileName = "zoo.json";

    internal static JsonSerializerOptions JsonOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        // A misspelt setting must not be ignored silently (it would train another zoo than the one asked for).
        UnmappedMemberHandling = System.Text.Json.Serialization.JsonUnmappedMemberHandling.Disallow,
    };

    /// <summary>The JSON text of <paramref name="settings"/>, used to decide whether a zoo can be reused.</summary>
    public static string Fingerprint(ZooSettings settings) => JsonSerializer.Serialize(settings, JsonOptions);

    /// <summary>Reads zoo.json; null when the file is missing, unreadable or of another format version.</summary>
    public static async Task<ZooManifest?> TryLoadAsync(string path, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
        {
            return null;
        }
        try
        {
            await using var stream = File.OpenRead(path);
            var manifest = await JsonSerializer.DeserializeAsync<ZooManifest>(stream, JsonOptions, cancellationToken);
            return manifest is { FormatVersion: CurrentFormatVersion } ? manifest : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>Writes zoo.json.</summary>
    public async Task SaveAsync(string path, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(path);
        var temporary = path + ".tmp";
        await using (var stream = File.Create(temporary))
        {
            await JsonSerializer.SerializeAsync(stream, this, JsonOptions, cancellationToken);
        }
        File.Move(temporary, path, overwrite: true);
    }
}
