// The maintenance window: "HH:MM-HH:MM" in UTC; a window whose end is before its start spans midnight.
const WINDOW = /^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$/;

export interface MaintenanceWindow {
  startMinute: number;
  endMinute: number;
  text: string;
}

export function parseWindow(text: string): MaintenanceWindow {
  const m = WINDOW.exec(text.trim());
  if (!m) throw new RangeError(`maintenance window "${text}": must be HH:MM-HH:MM in UTC, such as "01:00-05:00"`);
  const startMinute = Number(m[1]) * 60 + Number(m[2]);
  const endMinute = Number(m[3]) * 60 + Number(m[4]);
  if (startMinute === endMinute) throw new RangeError(`maintenance window "${text}": start and end are the same minute`);
  return { startMinute, endMinute, text: text.trim() };
}

export function inWindow(w: MaintenanceWindow, at: Date): boolean {
  const m = at.getUTCHours() * 60 + at.getUTCMinutes();
  return w.startMinute < w.endMinute ? m >= w.startMinute && m < w.endMinute : m >= w.startMinute || m < w.endMinute;
}
