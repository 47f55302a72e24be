using System.Text.Encodings.Web;
using System.Text.Json;
using SensMerging.Abstractions;

namespace SensMerging.Zoo.Tasks;

/// <summary>Writes prompt/response samples as JSONL, the form the runtime's CalibrationLoader reads.</summary>
public static class JsonlSamples
{
    // Relaxed escaping keeps code such as "print(a+b)" readable in the files ('+' would otherwise be \u002B).
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Writes one <c>{"prompt": ..., "response": ...}</c> object per line (UTF-8, no BOM, LF).</summary>
    public static async Task WriteAsync(string path, IEnumerable<TextSample> samples, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(samples);
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }
        await using var stream = File.Create(path);
        foreach (var sample in samples)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (sample.Response is null)
            {
                throw new ArgumentException($"Sample '{sample.Prompt}' has no response; task files hold prompt/response pairs.", nameof(samples));
            }
            await using (var writer = new Utf8JsonWriter(stream, WriterOptions))
            {
                writer.WriteStartObject();
                writer.WriteString("prompt", sample.Prompt);
                writer.WriteString("response", sample.Response);
                writer.WriteEndObject();
            }
            stream.WriteByte((byte)'\n');
        }
    }
}
