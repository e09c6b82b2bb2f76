; Inno Setup script: a one-file, per-user installer over dist\crownscan\ (built by
; packaging/build). No administrator rights: installs to %LOCALAPPDATA%\Programs\Crownscan,
; adds a Start-menu entry and an uninstaller (Settings > Apps). Build from the repository root:
;     iscc /DAppVersion=0.1.0 packaging\crownscan.iss
; Result: dist\crownscan-<version>-setup.exe

#ifndef AppVersion
  #define AppVersion "0.0.0"
#endif

[Setup]
AppId={{6F0C2B9E-3D57-4C1A-9A43-2E8B5C1D7F60}
AppName=Crownscan
AppVersion={#AppVersion}
AppPublisher=Crownscan
AppVerName=Crownscan {#AppVersion}
DefaultDirName={autopf}\Crownscan
DefaultGroupName=Crownscan
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\dist
OutputBaseFilename=crownscan-{#AppVersion}-setup
SetupIconFile=..\build\crownscan.ico
UninstallDisplayIcon={app}\crownscan.exe
UninstallDisplayName=Crownscan {#AppVersion}
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "..\dist\crownscan\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\Crownscan"; Filename: "{app}\crownscan.exe"
Name: "{autodesktop}\Crownscan"; Filename: "{app}\crownscan.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\crownscan.exe"; Description: "{cm:LaunchProgram,Crownscan}"; Flags: nowait postinstall skipifsilent

; The uninstaller removes the program folder only: settings, logs, caches and the sample
; workspace copy (with its QA decisions) stay in the user's folders; packaging/README.md says
; where, for a technician who wants them gone too.
